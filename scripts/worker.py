"""``taskrank worker``: an RQ worker on the configured Redis; run more of them to scale out."""

from __future__ import annotations

import argparse
import sys

from taskrank.queue.embedded import redis_url_for
from taskrank.queue.settings import Settings
from taskrank.queue.worker import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskrank worker", description=__doc__)
    parser.add_argument("--burst", action="store_true",
                        help="quit once the queue is empty instead of waiting for jobs")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    with redis_url_for(settings) as url:
        run_worker(settings.replace(redis_url=url), burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
