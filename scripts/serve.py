"""``taskrank serve``: the whole server on one machine.

Starts the embedded Redis (unless ``TASKRANK_REDIS_URL`` is set), RQ worker processes and
the Flask app under gunicorn; Ctrl-C or SIGTERM stops every child process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

from taskrank.queue.connection import connect
from taskrank.queue.durability import check_durability
from taskrank.queue.embedded import EmbeddedRedis
from taskrank.queue.settings import Settings, SettingsError
from taskrank.queue.tokens import ensure_admin_token


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskrank serve", description=__doc__)
    parser.add_argument("--host", default=settings.host, help="default TASKRANK_HOST")
    parser.add_argument("--port", type=int, default=settings.port, help="default TASKRANK_PORT")
    parser.add_argument("--workers", type=int, default=settings.web_workers,
                        help="gunicorn worker processes (default TASKRANK_WEB_WORKERS)")
    parser.add_argument("--rq-workers", type=int, default=settings.rq_workers,
                        help="RQ worker processes (default TASKRANK_RQ_WORKERS)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
        args = parse_args(argv, settings)
        settings = settings.replace(host=args.host, port=args.port, web_workers=args.workers,
                                    rq_workers=args.rq_workers)
    except SettingsError as error:
        print(f"taskrank serve: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir, settings.redis_fsync)
            settings = settings.replace(redis_url=embedded.start())
            stack.callback(embedded.stop)
            print(f"embedded Redis at {settings.redis_url} (data in {embedded.data_dir})")
        if not prepare_redis(settings):
            return 1
        children = start_children(settings)
        stack.callback(stop_children, children)
        print(f"taskrank serving on http://{settings.host}:{settings.port}", flush=True)
        return supervise(children)
    return 0


def prepare_redis(settings: Settings) -> bool:
    """Check durability and, on a first start, print a fresh admin token once."""
    r = connect(settings)
    if not check_durability(r, settings.require_durable_redis):
        return False
    if not settings.admin_token:
        token = ensure_admin_token(r)
        if token:
            print("first start: an admin token was created; it is shown only this once:")
            print(f"  {token}", flush=True)
    return True


def start_children(settings: Settings) -> list[subprocess.Popen]:
    env = {**os.environ, **settings.as_env()}
    python = sys.executable
    gunicorn = [python, "-m", "gunicorn", "--workers", str(settings.web_workers),
                "--bind", f"{settings.host}:{settings.port}", "--log-level", "warning",
                "--graceful-timeout", "10", "taskrank.server.wsgi:app"]
    worker = [python, "-m", "taskrank.scripts.worker"]
    children = [subprocess.Popen(worker, env=env) for _ in range(settings.rq_workers)]
    children.append(subprocess.Popen(gunicorn, env=env))
    return children


def supervise(children: list[subprocess.Popen]) -> int:
    """Wait until a signal asks us to stop (exit 0) or a child dies on its own (exit 1)."""
    stopping = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(f"taskrank serve: {child.args[2]} exited with {child.returncode}; "
                      "stopping", file=sys.stderr)
                return 1
        time.sleep(0.2)
    return 0


def stop_children(children: list[subprocess.Popen], timeout: float = 15.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
