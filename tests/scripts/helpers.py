"""A real HTTP server and a real RQ worker process for the client-command tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from werkzeug.serving import WSGIRequestHandler, make_server

from taskrank.queue.settings import Settings
from taskrank.server import create_app

WORKER_START_TIMEOUT = 30.0


class QuietHandler(WSGIRequestHandler):
    """No access log: the tests read the commands' own stderr."""

    def log_request(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(settings: Settings) -> Iterator[str]:
    """``create_app(settings)`` served by werkzeug on a free loopback port; yields its URL."""
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True,
                         request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def rq_worker(settings: Settings, r) -> Iterator[subprocess.Popen]:  # noqa: ANN001 - redis
    """A ``taskrank worker`` process on the test Redis, stopped (SIGTERM) at the end."""
    from rq import Worker

    from taskrank.queue.connection import connect_binary
    from taskrank.queue.worker import task_queue

    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRANK_")}
    # A quiet upkeep thread: the worker forks a work horse per job beside it.
    env.update(settings.replace(sweep_interval=30.0).as_env())
    process = subprocess.Popen([sys.executable, "-m", "taskrank.scripts.worker"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    queue = task_queue(settings, connect_binary(settings))
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not Worker.count(queue=queue):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the RQ worker did not start")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
