"""``taskrank worker``: an RQ worker on the configured Redis; run more of them to scale out."""

from __future__ import annotations

import argparse
import sys

from taskrank.queue.running import NoServerError, command_redis
from taskrank.queue.settings import Settings
from taskrank.queue.worker import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskrank worker", description=__doc__)
    parser.add_argument("--burst", action="store_true",
                        help="quit once the queue is empty instead of waiting for jobs")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        with command_redis(settings, say=lambda text: print(f"taskrank worker: {text}",
                                                             file=sys.stderr)) as url:
            run_worker(settings.replace(redis_url=url), burst=args.burst)
    except NoServerError as error:
        print(f"taskrank worker: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
