"""The Python client of the taskrank HTTP API.

::

    from taskrank.client import ApiError, Client

    with Client("http://127.0.0.1:8000", token) as api:
        api.post("/v1/projects", {"id": "p", "labels": ["neg", "pos"]})
        api.post("/v1/projects/p/items",
                 {"items": [{"id": "i1", "predictions": {"m": [0.3, 0.7]}}]})
        api.put("/v1/experts/e0", {"capacity": 3})
        task = api.post("/v1/projects/p/tasks/next", {"expert_id": "e0"})  # None: nothing left
        api.post(f"/v1/tasks/{task['task']['id']}/label", {"label": "pos"})

``get``, ``post``, ``put``, ``patch`` and ``delete`` answer the decoded JSON (``None`` for
an empty answer such as 204).  A 4xx/5xx answer raises ``ApiError``, which carries the
problem document's ``status``, ``title`` and ``detail``; a server that cannot be reached
raises ``ClientError`` (``ApiError`` is a ``ClientError`` too).

**Retries.**  ``request`` (and the methods above) retry what is safe to retry:

- a connection that could not be opened (the server is restarting): again after 0.25 s,
  0.5 s, 1 s (``retries``);
- a 503 that carries ``Retry-After`` (Redis is briefly unavailable): again after the time
  the server asks for, at most 30 s each (``retries_503``);
- a connection lost after the request was sent: again only when a replay cannot do the
  work twice, i.e. for GET, HEAD, PUT, DELETE and for the label route, whose
  ``Idempotency-Key`` makes the server answer a replay with the stored answer;
- a kept-alive connection the server had closed while idle: once, on a new connection
  (the request never reached the server).

A timeout is never retried: the server may still be working on the request.

**Idempotency keys.**  Every POST and PATCH ``request`` carries an ``Idempotency-Key``
header (a random one unless the caller passes its own), the same on each retry of that
request.  The label route honours it: a label retried after a lost answer is counted
once.  Other routes ignore the header today.

**Connections.**  One keep-alive ``http.client`` connection per client (DESIGN §7: a
``requests`` client caps near 260 requests/s by itself).  A client is not thread-safe:
``clone()`` gives each thread its own.  ``send`` (and ``start`` + ``finish``) make one
exchange exactly as it happens, with no retry and no exception for a 4xx/5xx, for callers
that handle failures themselves (the fault tests do).

The client needs only the standard library.  The benchmarks use a leaner raw-socket
client of their own (``taskrank.scripts.bench.lean_client``).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["ApiError", "Client", "ClientError", "Response"]

RETRIES = 3  # attempts after the first when the connection cannot be opened or is lost
RETRY_BACKOFF = 0.25  # seconds before the first such retry, doubled for each next one
RETRIES_503 = 3  # attempts after the first when the server answers 503 with Retry-After
MAX_RETRY_AFTER = 30.0  # never sleep longer than this on one Retry-After
WRITE_METHODS = frozenset({"POST", "PATCH"})  # the requests that get an Idempotency-Key
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# The routes whose writes the server deduplicates by Idempotency-Key.
KEYED_ROUTES = re.compile(r"^/v1/tasks/[^/?]+/label$")


class ClientError(Exception):
    """The server could not be reached or answered something that is not HTTP JSON."""


class ApiError(ClientError):
    """A 4xx/5xx answer; ``detail`` is the problem document's explanation."""

    def __init__(self, status: int, title: str, detail: str, body: object = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.body = status, title, detail, body


class Response(NamedTuple):
    """One answer as received: ``status, headers, body = client.send(...)``."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: object  # the decoded JSON, the text when it is not JSON, None when empty

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asks the client to wait (capped), None when it does not."""
        return _retry_after(self.headers.get("retry-after"))


class _Unreached(Exception):
    """A connection failed; ``sent`` when the request may have reached the server."""

    def __init__(self, error: BaseException, sent: bool) -> None:
        super().__init__(str(error))
        self.error, self.sent = error, sent


class Client:
    """``Client(url, token).post("/v1/projects", {...})`` -> the decoded JSON answer."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0,
                 retries_503: int = RETRIES_503, retries: int = RETRIES,
                 retry_backoff: float = RETRY_BACKOFF) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"--url must look like http://host:port, got {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._retries_503, self._retries, self._backoff = retries_503, retries, retry_backoff
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._token = token

    def clone(self) -> Client:
        """A new client to the same server with the same token and options (one per thread)."""
        return Client(self.url, self._token, self._timeout, self._retries_503, self._retries,
                      self._backoff)

    def get(self, path: str) -> object:
        return self.request("GET", path)

    def post(self, path: str, body: object = None, headers: dict | None = None) -> object:
        return self.request("POST", path, body, headers)

    def put(self, path: str, body: object) -> object:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: object) -> object:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> object:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, body: object = None,
                headers: dict | None = None) -> object:
        """Send one request, retrying what is safe (see the module); the decoded answer.

        ``body`` may be pre-encoded JSON ``bytes``.  Raises ``ApiError`` on 4xx/5xx and
        ``ClientError`` when the server cannot be reached.
        """
        headers = dict(headers or {})
        if method in WRITE_METHODS and not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = secrets.token_urlsafe(16)
        replayable = method in REPLAYABLE_METHODS or bool(KEYED_ROUTES.match(path))
        answer = self._with_retries(method, path, _encode(body), headers, replayable)
        if answer.status >= 400:
            raise _api_error(answer.status, answer.body)
        return answer.body

    def _with_retries(self, method: str, path: str, data: bytes | None, headers: dict,
                      replayable: bool) -> Response:
        lost = busy = 0
        while True:
            try:
                answer = self._exchange(method, path, data, headers)
            except _Unreached as error:
                if (error.sent and not replayable) or lost >= self._retries:
                    raise self._unreachable(error) from None
                time.sleep(self._backoff * 2 ** lost)
                lost += 1
                continue
            wait = answer.retry_after
            if answer.status == 503 and wait is not None and busy < self._retries_503:
                time.sleep(wait)
                busy += 1
                continue
            return answer

    def send(self, method: str, path: str, body: object = None,
             headers: dict | None = None) -> Response:
        """One exchange as it happens: no retry, no Idempotency-Key added, no exception for
        a 4xx/5xx; ``ClientError`` when the connection fails."""
        try:
            return self._exchange(method, path, _encode(body), dict(headers or {}))
        except _Unreached as error:
            raise self._unreachable(error) from None

    def start(self, method: str, path: str, body: object = None,
              headers: dict | None = None) -> None:
        """Write a request without reading its answer (``finish`` reads it): for a caller
        that acts while the request is in flight."""
        try:
            self._write(method, path, _encode(body), dict(headers or {}))
        except _Unreached as error:
            raise self._unreachable(error) from None

    def finish(self) -> Response:
        """The answer to the request ``start`` wrote."""
        try:
            return self._read()
        except _Unreached as error:
            raise self._unreachable(error) from None

    def _exchange(self, method: str, path: str, data: bytes | None,
                  headers: dict) -> Response:
        reused = self._conn is not None
        try:
            self._write(method, path, data, headers)
            return self._read()
        except _Unreached:
            if not reused:
                raise
        # A kept-alive connection the server had closed: the request never reached it.
        self._write(method, path, data, headers)
        return self._read()

    def _write(self, method: str, path: str, data: bytes | None, headers: dict) -> None:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self._timeout)
            try:
                connection.connect()
            except TimeoutError as error:
                raise self._unreachable(_Unreached(error, sent=False)) from None
            except OSError as error:
                raise _Unreached(error, sent=False) from None
            self._conn = connection
        sent = {**self._headers, **headers}
        if data is not None:
            sent["Content-Type"] = "application/json"
        self._guarded(lambda: self._conn.request(method, self._base + path, body=data,
                                                 headers=sent))

    def _read(self) -> Response:
        response = self._guarded(self._conn.getresponse)
        raw = self._guarded(response.read)
        if response.will_close:
            self.close()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Response(response.status, headers, _decode(raw, headers.get("content-type", "")))

    def _guarded(self, step: Callable[[], object]) -> object:
        """Run one step on the open connection; close it when the step fails."""
        try:
            return step()
        except TimeoutError as error:  # never retried: the server may still be working
            self.close()
            raise self._unreachable(_Unreached(error, sent=True)) from None
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise _Unreached(error, sent=True) from None

    def _unreachable(self, error: _Unreached) -> ClientError:
        hint = "" if error.sent else "; is 'taskrank serve' running there?"
        return ClientError(f"cannot reach {self.url}: {error.error}{hint}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _encode(body: object) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":")).encode()


def _decode(raw: bytes, content_type: str) -> object:
    if not raw:
        return None
    if "json" not in content_type:
        return raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        raise ClientError(f"the server sent invalid JSON ({len(raw)} bytes)") from None


def _retry_after(value: str | None) -> float | None:
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
