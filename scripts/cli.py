"""The ``taskrank`` command: dispatches ``taskrank NAME ...`` to ``taskrank.scripts.NAME``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskrank.queue.settings import Settings

COMMANDS = {
    "serve": "run the server: embedded Redis (unless TASKRANK_REDIS_URL), RQ worker, gunicorn",
    "worker": "run an RQ worker on the configured Redis (scale out with more of these)",
    "token": "create an API token: taskrank token create --role admin|platform|expert",
    "ingest": "stream items from JSONL, CSV or .npz into a project",
    "backfill": "re-score every pending item of a project over the RQ workers",
    "simulate": "replay a labeled dataset through the acquisition strategies",
    "bench": "run the benchmarks and write their JSON",
    "demo": "play a labeling platform against a running server",
}

# Commands whose module has another name: scripts/token.py would shadow the standard-library
# token module when run by path; the benchmarks are a package of their own.
MODULES = {"token": "tokens", "bench": "bench.command"}


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_server_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The ``--url`` and ``--token`` options every command that goes over HTTP takes."""
    from taskrank.queue.running import server_url

    url = server_url(settings)
    parser.add_argument("--url", default=url, help=f"taskrank server (default TASKRANK_URL, "
                                                   f"else the running server; now {url})")
    parser.add_argument("--token", default=settings.token,
                        help="bearer token (default TASKRANK_TOKEN)")


def usage() -> str:
    lines = ["usage: taskrank COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    lines.append("\n'taskrank COMMAND --help' shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown taskrank command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"taskrank.scripts.{MODULES.get(name, name)}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
