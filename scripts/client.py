"""A small JSON client for the taskrank HTTP API, shared by the client-side commands.

Built on ``http.client`` with one keep-alive connection (DESIGN §7: a ``requests`` client
caps near 260 requests/s by itself).  Not thread-safe: give each thread its own client.
"""

from __future__ import annotations

import argparse
import email.utils
import http.client
import json
import time
from urllib.parse import urlsplit

from taskrank.queue.settings import Settings

RETRIES_503 = 3  # attempts after the first when the server answers 503 with Retry-After
MAX_RETRY_AFTER = 30.0  # never sleep longer than this on one Retry-After


class ClientError(Exception):
    """The server could not be reached or answered something that is not HTTP JSON."""


class ApiError(ClientError):
    """A 4xx/5xx answer; ``detail`` is the problem document's explanation."""

    def __init__(self, status: int, title: str, detail: str, body: object = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.body = status, title, detail, body


class Client:
    """``Client(url, token).post("/v1/projects", {...})`` -> the decoded JSON answer."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0,
                 retries_503: int = RETRIES_503) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"--url must look like http://host:port, got {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._retries_503 = retries_503
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._token = token

    def clone(self) -> Client:
        """A new client to the same server with the same token (one per thread)."""
        return Client(self.url, self._token, self._timeout, self._retries_503)

    def get(self, path: str) -> object:
        return self.request("GET", path)

    def post(self, path: str, body: object = None, headers: dict | None = None) -> object:
        return self.request("POST", path, body, headers)

    def put(self, path: str, body: object) -> object:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: object) -> object:
        return self.request("PATCH", path, body)

    def request(self, method: str, path: str, body: object = None,
                headers: dict | None = None) -> object:
        """Send one request; the decoded JSON answer (None for 204).

        ``body`` may be pre-encoded JSON ``bytes``.  Raises ``ApiError`` on 4xx/5xx (after
        retrying a 503 that carries Retry-After) and ``ClientError`` when unreachable.
        """
        data = body if isinstance(body, bytes) or body is None else json.dumps(
            body, separators=(",", ":")).encode()
        sent = {**self._headers, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        for attempt in range(self._retries_503 + 1):
            status, answer, retry_after = self._exchange(method, self._base + path, data, sent)
            if status == 503 and retry_after is not None and attempt < self._retries_503:
                time.sleep(retry_after)
                continue
            break
        if status >= 400:
            raise _api_error(status, answer)
        return answer

    def _exchange(self, method: str, path: str, data: bytes | None,
                  headers: dict) -> tuple[int, object, float | None]:
        reused = self._conn is not None
        try:
            return self._send(method, path, data, headers)
        except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as error:
            self.close()
            if not reused or isinstance(error, TimeoutError):
                raise ClientError(f"cannot reach {self.url}: {error}; is 'taskrank serve' "
                                  "running there?") from None
        # A kept-alive connection the server had closed: the request never reached it.
        try:
            return self._send(method, path, data, headers)
        except (ConnectionError, http.client.HTTPException, OSError) as error:
            self.close()
            raise ClientError(f"cannot reach {self.url}: {error}") from None

    def _send(self, method: str, path: str, data: bytes | None,
              headers: dict) -> tuple[int, object, float | None]:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self._timeout)
        self._conn.request(method, path, body=data, headers=headers)
        response = self._conn.getresponse()
        raw = response.read()
        if response.will_close:
            self.close()
        return response.status, _decode(raw, response), _retry_after(response)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(raw: bytes, response: http.client.HTTPResponse) -> object:
    if not raw:
        return None
    kind = response.getheader("Content-Type", "")
    if "json" not in kind:
        return raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        raise ClientError(f"the server sent invalid JSON ({len(raw)} bytes)") from None


def _retry_after(response: http.client.HTTPResponse) -> float | None:
    value = response.getheader("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _api_error(status: int, answer: object) -> ApiError:
    if isinstance(answer, dict):
        title = str(answer.get("title") or http.client.responses.get(status, "Error"))
        detail = str(answer.get("detail") or title)
    else:
        title = http.client.responses.get(status, "Error")
        detail = str(answer or title)[:500]
    return ApiError(status, title, detail, answer)


def add_server_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The ``--url`` and ``--token`` options every client-side command takes."""
    parser.add_argument("--url", default=settings.url,
                        help=f"taskrank server (default TASKRANK_URL, now {settings.url})")
    parser.add_argument("--token", default=settings.token,
                        help="bearer token (default TASKRANK_TOKEN)")
