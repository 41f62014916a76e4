"""``taskrank worker``: an RQ worker on the configured Redis; run more of them to scale out.

It takes jobs from RQ's Redis (``TASKRANK_RQ_REDIS_URL``, by default the data store) and
works on the data store (``TASKRANK_REDIS_URL``); a data store that is a Redis Cluster needs
``TASKRANK_RQ_REDIS_URL``."""

from __future__ import annotations

import argparse
import sys

from taskrank.queue.connection import rq_url
from taskrank.queue.running import NoServerError, command_settings
from taskrank.queue.settings import Settings, SettingsError
from taskrank.queue.worker import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskrank worker", description=__doc__)
    parser.add_argument("--burst", action="store_true",
                        help="quit once the queue is empty instead of waiting for jobs")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        with command_settings(settings, say=lambda text: print(f"taskrank worker: {text}",
                                                                file=sys.stderr)) as found:
            rq_url(found)  # refused before anything starts: a cluster needs an RQ Redis
            run_worker(found, burst=args.burst)
    except (NoServerError, SettingsError) as error:
        print(f"taskrank worker: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
