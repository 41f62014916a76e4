"""``taskrank serve``: the whole server on one machine.

Starts the embedded Redis (unless ``TASKRANK_REDIS_URL`` is set), RQ worker processes and
the Flask app under gunicorn; Ctrl-C, SIGTERM or SIGHUP stops every child process
gracefully (requests in flight are answered, a running job finishes).
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
    # Before anything starts: a signal during startup must still stop what did start.
    stopping = catch_stop_signals()
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
            try:
                settings = settings.replace(redis_url=embedded.start())
            except (RuntimeError, FileNotFoundError) as error:
                print(f"taskrank serve: {error}", file=sys.stderr)
                return 1
            stack.callback(embedded.stop)
            print(f"embedded Redis at {settings.redis_url} (data in {embedded.data_dir})")
        if stopping:
            return 0
        if not prepare_redis(settings):
            return 1
        children: list[subprocess.Popen] = []
        stack.callback(stop_children, children)
        start_children(settings, children)
        print(f"taskrank serving on http://{settings.host}:{settings.port}", flush=True)
        return supervise(children, stopping)


def catch_stop_signals() -> list[int]:
    """From now on SIGINT, SIGTERM and SIGHUP (terminal closed) only append to the returned
    list, so the embedded Redis and the children are always stopped, and in order."""
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return stopping


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


# gunicorn's default sync worker: one request per process at a time, the connection closed
# after each answer.  On merged main it met every serving budget in 4 of 4 benchmark runs,
# the threaded worker (`--worker-class gthread --threads 2`, keep-alive) in 2 of 4: it spends
# more server CPU per request, which one client's serial loop pays in full (BENCHMARKS.md).
WORKER_ARGS: tuple[str, ...] = ()


def start_children(settings: Settings, children: list[subprocess.Popen]) -> None:
    """Start the RQ workers and gunicorn, adding each to ``children`` as soon as it runs."""
    env = {**os.environ, **settings.as_env()}
    python = sys.executable
    gunicorn = [python, "-m", "gunicorn", "--workers", str(settings.web_workers), *WORKER_ARGS,
                "--bind", f"{settings.host}:{settings.port}", "--log-level", "warning",
                "--graceful-timeout", "10", "taskrank.server.wsgi:app"]
    worker = [python, "-m", "taskrank.scripts.worker"]
    for command in [worker] * settings.rq_workers + [gunicorn]:
        # A process group of their own: the terminal's Ctrl-C reaches only us, and we stop
        # them with one SIGTERM (gunicorn treats SIGINT as a quick stop that drops requests).
        children.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                         process_group=0))


def supervise(children: list[subprocess.Popen], stopping: list[int]) -> int:
    """Wait until a signal asks us to stop (exit 0) or a child dies on its own (exit 1)."""
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(f"taskrank serve: {child.args[2]} exited with {child.returncode}; "
                      "stopping", file=sys.stderr)
                return 1
        time.sleep(0.2)
    return 0


def stop_children(children: list[subprocess.Popen], timeout: float = 15.0) -> None:
    """SIGTERM each child (graceful); past ``timeout`` kill its whole process group."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # The group holds what the child started: gunicorn's workers, RQ's work horse.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
