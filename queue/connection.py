"""Redis clients built from settings."""

from __future__ import annotations

import hiredis
import redis

from taskrank.queue.settings import Settings


def connect(settings: Settings, **kwargs: object) -> redis.Redis:
    """A client for the configured Redis; ``settings.redis_url`` must be set by then."""
    if not settings.redis_url:
        raise ValueError("no Redis URL: set TASKRANK_REDIS_URL or start the embedded Redis first")
    options = {"decode_responses": True, "socket_timeout": 5.0, "socket_connect_timeout": 2.0,
               "health_check_interval": 30}
    options.update(kwargs)
    return redis.Redis.from_url(settings.redis_url, **options)


def connect_binary(settings: Settings) -> redis.Redis:
    """A client that returns bytes: RQ and the model store need raw values."""
    return connect(settings, decode_responses=False)


def same_server(client: redis.Redis, decode_responses: bool) -> redis.Redis:
    """Another client on ``client``'s server with the given decoding (RQ hands jobs a bytes
    client; the store reads strings)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": decode_responses}
    other = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))
    # It owns its pool, so close() (or a with block) closes its sockets: left to the garbage
    # collector (redis-py clients are in reference cycles), a socket may be finalized open.
    other.auto_close_connection_pool = True
    return other


def send_many(r: redis.Redis, commands: list[tuple]) -> list:
    """The replies of ``commands``, sent in one write on one connection.

    A redis-py pipeline spends ~10 µs of pure Python per command (the re-score's 2,000
    HMGETs per batch); here commands are packed by hiredis and the replies parsed by one
    ``hiredis.Reader``: ~2 µs.  Each command still runs on its own in Redis, so a batch
    never holds Redis the way one script would.  Replies are as Redis sends them, without
    redis-py's per-command conversions.  Raises the first error reply.
    """
    conn = r.connection_pool.get_connection()
    try:
        # One buffer packed in C (str as UTF-8, numbers as their repr, as redis-py does).
        conn.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
        replies = _read_replies(conn, len(commands))
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection cannot be reused
        raise
    finally:
        r.connection_pool.release(conn)
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
    return replies


def _read_replies(conn: redis.connection.Connection, count: int) -> list:
    encoding = conn.encoder.encoding if conn.encoder.decode_responses else None
    reader = hiredis.Reader(encoding=encoding) if encoding else hiredis.Reader()
    replies: list = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is False:  # incomplete: read more (the socket keeps its timeout)
            chunk = conn._sock.recv(1 << 20)
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection mid-reply")
            reader.feed(chunk)
        else:
            replies.append(reply)
    return replies
