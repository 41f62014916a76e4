"""A lean keep-alive HTTP client, for the benchmarks only.

DESIGN §7 asks for a lean client: a ``requests`` client caps near 260 loops/s by itself,
and even ``http.client`` (what ``taskrank.client`` uses) spends 0.8 ms of CPU per
next+label loop (header objects, email parsing of the response headers).  ``LeanClient``
writes each request as one pre-built byte string on a raw socket and reads the answer by
its ``Content-Length`` (or chunks): HTTP/1.1 keep-alive, reconnecting when the server
closes the connection (gunicorn's sync worker closes it after every response).  The floor
app is measured with the same client.  It neither retries nor sends idempotency keys: a
benchmark must see every failure.  Everything else talks to the server through
``taskrank.client``.

The loops (``loops.py``) run in spawned child processes, so this module imports nothing
heavy: a spawned child must start in a fraction of a second.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

RECV_BYTES = 65536


class ServerClosed(ConnectionError):
    """The server closed the connection before answering."""


class LeanClient:
    """One keep-alive connection; JSON bodies; a bearer token on every request."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.address, self.timeout = (parts.hostname, parts.port), timeout
        self.head = (f"Host: {parts.hostname}:{parts.port}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.sock: socket.socket | None = None
        self.buffer = b""

    def encode(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """The whole request as bytes, to send again and again."""
        length = f"Content-Length: {len(body)}\r\n".encode() if body is not None else b""
        return (f"{method} {path} HTTP/1.1\r\n".encode() + self.head + length + b"\r\n"
                + (body or b""))

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """(status, decoded JSON or None); ``body`` may be pre-encoded bytes."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return self.send(self.encode(method, path, data))

    def send(self, raw: bytes) -> tuple[int, object]:
        """Send a request made by ``encode``; (status, decoded JSON or None)."""
        reused = self.sock is not None
        try:
            return self._exchange(raw)
        except ServerClosed:
            if not reused:
                raise
            # An idle keep-alive connection the server had closed: nothing of this request
            # was answered, so send it once more on a new connection.
            return self._exchange(raw)

    def _exchange(self, raw: bytes) -> tuple[int, object]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        try:
            try:
                self.sock.sendall(raw)
            except (BrokenPipeError, ConnectionResetError) as error:
                raise ServerClosed(f"the server had closed the connection: {error}") from None
            status, headers, body = self._read_response()
        except OSError:  # ServerClosed included
            self.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, json.loads(body) if body else None

    def _read_response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        end = self.buffer.find(b"\r\n\r\n")
        while end < 0:
            self._fill(not self.buffer)
            end = self.buffer.find(b"\r\n\r\n")
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            return status, headers, self._read_chunked()
        if b"content-length" in headers:
            return status, headers, self._take(int(headers[b"content-length"]))
        while self._fill(False, eof_ok=True):  # no length: the body ends with the connection
            pass
        body, self.buffer = self.buffer, b""
        headers[b"connection"] = b"close"
        return status, headers, body

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self._line()
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._take(size))
            self._take(2)

    def _line(self) -> bytes:
        end = self.buffer.find(b"\r\n")
        while end < 0:
            self._fill(False)
            end = self.buffer.find(b"\r\n")
        line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill(False)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _fill(self, nothing_yet: bool, eof_ok: bool = False) -> bool:
        try:
            chunk = self.sock.recv(RECV_BYTES)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if eof_ok:
                return False
            if nothing_yet:
                raise ServerClosed("the server closed the connection without an answer")
            raise ConnectionError("the server closed the connection mid-answer")
        self.buffer += chunk
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""
