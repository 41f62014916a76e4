"""A WSGI app served on a loopback port by a threaded werkzeug server, for tests that need
real HTTP (a browser, schemathesis' own engine)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from werkzeug.serving import make_server


@contextlib.contextmanager
def serving(wsgi_app, **options) -> Iterator[str]:
    """The app's base URL while the block runs; the server is stopped after.  ``options``
    go to werkzeug's ``make_server`` (e.g. ``request_handler``)."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
