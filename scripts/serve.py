"""``taskrank serve``: the whole server on one machine.

Starts the embedded Redis (unless ``TASKRANK_REDIS_URL`` is set; when it names a Redis Cluster
and ``TASKRANK_RQ_REDIS_URL`` is not set, an embedded Redis for RQ's queue only), RQ worker
processes and the Flask app under gunicorn (the process stack, ``taskrank.scripts.stack``), then
supervises them: one that exits is restarted with backoff while the others keep serving.
Ctrl-C, SIGTERM or SIGHUP stops every child process gracefully (requests in flight are
answered, a running job finishes); if serve itself is killed, its children die with it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from taskrank.queue.connection import connect, is_cluster
from taskrank.queue.durability import check_durability
from taskrank.queue.running import register, run_dir, unregister
from taskrank.queue.settings import Settings, SettingsError
from taskrank.queue.tokens import ensure_admin_token
from taskrank.scripts.stack import Stack


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
    # The supervisor's notes (a child exited, restarted) go to stderr.
    logging.basicConfig(level=settings.log_level, format="taskrank serve: %(message)s")
    with Stack(settings) as stack:
        code = start(stack, stopping)
        if code is not None:
            return code
        print(f"taskrank serving on http://{settings.host}:{settings.port}", flush=True)
        note = note_server(stack.settings)
        try:
            stack.supervise(stopping)
        finally:
            unregister(note)
        return 0


def note_server(settings: Settings) -> Path | None:
    """Let client commands in other shells find this server and its Redis (queue/running.py)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
    try:
        return register(settings, f"http://{host}:{settings.port}")
    except OSError as error:
        print(f"taskrank serve: cannot note this server in {run_dir(settings)} ({error}); "
              "commands in other shells need TASKRANK_DATA_DIR or TASKRANK_REDIS_URL",
              file=sys.stderr)
        return None


def start(stack: Stack, stopping: list[int]) -> int | None:
    """Start Redis (the embedded one unless configured), the RQ workers and gunicorn; the
    exit code when serve must end instead of serving (an error, or a stop signal)."""
    settings = stack.settings
    # A cluster without a Redis for RQ: the embedded Redis holds RQ's queue only.
    queue_only = bool(settings.redis_url) and not settings.rq_redis_url and is_cluster(settings)
    if not settings.redis_url or queue_only:
        try:
            embedded = stack.start_redis(queue_only=queue_only)
        except (RuntimeError, FileNotFoundError) as error:
            print(f"taskrank serve: {error}", file=sys.stderr)
            return 1
        role = " for RQ's queue only (the data store is the cluster)" if queue_only else ""
        print(f"embedded Redis{role} at {embedded.url} (data in {embedded.data_dir})")
    if stopping:
        return 0
    if not prepare_redis(stack.settings):
        return 1
    stack.start_workers()
    try:
        stack.start_web().wait_ready(stopping=stopping)
    except RuntimeError as error:
        print(f"taskrank serve: {error}", file=sys.stderr)
        return 1
    return 0 if stopping else None


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


if __name__ == "__main__":
    sys.exit(main())
