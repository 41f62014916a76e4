"""The benchmarks' raw-socket HTTP/1.1 client against a real HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskrank.scripts.bench.lean_client import LeanClient


class Handler(BaseHTTPRequestHandler):
    """Echoes the request; the path chooses how the answer is framed."""

    protocol_version = "HTTP/1.1"
    connections: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        echo = {"path": self.path, "body": json.loads(self.rfile.read(length) or b"null"),
                "auth": self.headers["Authorization"],
                # the client's port names the connection (an object's id may be reused)
                "connection": self.client_address[1]}
        Handler.connections.append(self.client_address[1])
        data = json.dumps(echo).encode()
        if self.path == "/empty":
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (data[:7], data[7:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(data)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_lean_client_keeps_alive_reads_lengths_chunks_and_reconnects(server):
    """Answers framed by Content-Length or chunks come back decoded on one connection;
    after a 'Connection: close' answer the next request opens a new connection."""
    url = f"http://127.0.0.1:{server.server_address[1]}"
    client = LeanClient(url, "tok")
    status, first = client.request("POST", "/a", {"x": 1})
    assert (status, first["body"], first["auth"]) == (201, {"x": 1}, "Bearer tok")
    status, second = client.request("POST", "/chunked", b'{"y": [1, 2]}')
    assert (status, second["body"]) == (201, {"y": [1, 2]})
    assert second["connection"] == first["connection"]
    assert client.request("POST", "/empty", {}) == (204, None)
    closing = client.request("POST", "/close", {})[1]
    assert client.sock is None
    after = client.send(client.encode("POST", "/b", b"3"))[1]
    assert after["body"] == 3 and after["connection"] != closing["connection"]
    client.close()


def test_lean_client_resends_when_an_idle_connection_was_closed(server):
    """A request on a keep-alive connection the server closed meanwhile is sent again on a
    new connection, once."""
    url = f"http://127.0.0.1:{server.server_address[1]}"
    client = LeanClient(url, "tok")
    client.request("POST", "/a", {})
    client.sock.shutdown(2)  # as if the server had closed it: the next recv sees nothing
    status, answer = client.request("POST", "/again", [1])
    assert (status, answer["body"]) == (201, [1])
    client.close()
