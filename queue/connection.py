"""Redis clients built from settings."""

from __future__ import annotations

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
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))
