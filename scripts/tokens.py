"""``taskrank token create --role admin|platform|expert [--expert-id E]``."""

from __future__ import annotations

import argparse
import sys

from taskrank.queue.connection import connect
from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.running import NoServerError, command_settings
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import ROLES, create_token
from taskrank.queue.validation import check_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskrank token", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a token; it is printed once, as the last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--expert-id", help="the expert an expert token acts for")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.role == "expert") != (args.expert_id is not None):
        return _fail("--expert-id is required with --role expert and only with it")
    if args.expert_id is not None:
        try:  # the API's rule: a token for any other id could never be used
            check_id(args.expert_id, "--expert-id")
        except InvalidInputError as error:
            return _fail(f"{error.detail}; the API takes no other expert id")
    settings = Settings.from_env()
    try:
        with command_settings(settings, say=_say) as found:
            token = create_token(connect(found), args.role, args.expert_id)
    except NoServerError as error:
        return _fail(str(error))
    print(f"created a {args.role} token; it is shown only this once:", file=sys.stderr)
    print(token)
    return 0


def _say(text: str) -> None:
    print(f"taskrank token: {text}", file=sys.stderr)


def _fail(message: str) -> int:
    _say(message)
    return 2


if __name__ == "__main__":
    sys.exit(main())
