"""A real HTTP server and a real RQ worker process for the client-command tests."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from werkzeug.serving import WSGIRequestHandler

from taskrank.queue.settings import Settings
from taskrank.scripts.stack import Child, Stack, clean_environ
from taskrank.server import create_app
from tests.live import serving

WORKER_START_TIMEOUT = 30.0


class QuietHandler(WSGIRequestHandler):
    """No access log: the tests read the commands' own stderr."""

    def log_request(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(settings: Settings) -> Iterator[str]:
    """``create_app(settings)`` served by werkzeug on a free loopback port; yields its URL."""
    with serving(create_app(settings), request_handler=QuietHandler) as url:
        yield url


@contextlib.contextmanager
def rq_worker(settings: Settings, r) -> Iterator[Child]:  # noqa: ANN001 - redis
    """A ``taskrank worker`` process (from the process stack) on the test Redis, registered
    on the queue when it is yielded and stopped (SIGTERM) at the end."""
    # A quiet upkeep thread: the worker forks a work horse per job beside it.
    with Stack(settings.replace(sweep_interval=30.0), clean_environ(),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as stack:
        worker = stack.start_workers(1)[0]
        stack.wait_workers(1, timeout=WORKER_START_TIMEOUT)
        yield worker
