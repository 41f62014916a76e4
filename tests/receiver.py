"""A real webhook receiver for the tests: a threaded HTTP server on a loopback port that
records every request and answers the statuses a test scripts (then 200)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

SECRET = "whsec_dGFza3JhbmsgdGVzdHM6IGEgd2ViaG9vayBzZWNyZXQ="  # 32 bytes


@dataclass(frozen=True)
class Request:
    """One request the receiver got: its path, headers (lower-case names) and body bytes."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict:
        return json.loads(self.body)

    def verify(self, secret: str = SECRET) -> dict:
        """The payload, after the Standard Webhooks reference library checked the
        signature and timestamp with ``secret`` (it raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """``Receiver(answers=[503, 503])``: answers 503 twice, then 200; ``url`` to subscribe."""

    def __init__(self, answers: list[int] | tuple = (), port: int = 0,
                 headers: dict[str, str] | None = None) -> None:
        self.requests: list[Request] = []
        self.answers = list(answers)
        self.extra_headers = headers or {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/taskrank"

    def of(self, event: str) -> list[Request]:
        """The requests that carried ``event``."""
        with self._lock:
            return [request for request in self.requests if request.payload["type"] == event]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(Request(self.path, {
                        name.lower(): value for name, value in self.headers.items()}, body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass  # quiet: the test reads ``requests``

        return Handler
