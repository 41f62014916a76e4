"""Checks shared by the HTTP API and the scripts: each failure names the field and the fix."""

from __future__ import annotations

import json
import math
import re
import sys

from taskrank.queue.exceptions import InvalidInputError

# "." and ".." match the character set but cannot be addressed: HTTP clients remove such
# dot segments from URLs.
ID_PATTERN = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}")
# RQ's job id alphabet; ours are ``kind-<random>-<hex of the project id>`` (up to 273
# characters, a re-score chunk adds ``-c<n>``), so longer than a platform id.
MAX_JOB_ID = 512
JOB_ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_JOB_ID}}}")
# What a label may carry beside the label itself (leased or not).
MAX_COMMENT_BYTES = 10 * 1024
MAX_ANSWER_BYTES = 64 * 1024


# The largest finite float: JSON readers (Python's, JavaScript's) take a number beyond it
# for Infinity, which is not JSON, so one stored would break every strict client it reaches.
MAX_FLOAT = sys.float_info.max


def fail(field: str, detail: str) -> InvalidInputError:
    """An error for one field; raise it."""
    return InvalidInputError(f"{field}: {detail}", errors=[{"field": field, "detail": detail}])


def check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise fail(field, f"must be 1-128 characters of A-Z a-z 0-9 . _ -, got {value!r}"[:300])
    return value


def check_job_id(value: object) -> str:
    if not isinstance(value, str) or not JOB_ID_PATTERN.fullmatch(value):
        raise fail("job id", f"must be 1-{MAX_JOB_ID} characters of A-Z a-z 0-9 _ -, "
                             f"got {value!r}"[:300])
    return value


def check_int(value: object, field: str, low: int, high: int) -> int:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema's "integer" says).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(field, f"must be an integer from {low} to {high}, got {value!r}"[:300])
    return value


def _finite_number(value: object) -> bool:
    """A JSON number (not a boolean) that is finite, and a float (so not an integer beyond
    the float range; comparisons also refuse NaN and infinity)."""
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and -MAX_FLOAT <= value <= MAX_FLOAT)


def check_number(value: object, field: str, low: float = -math.inf,
                 high: float = math.inf) -> float:
    if not (_finite_number(value) and low <= value <= high):
        bounds = f" from {low} to {high}" if math.isfinite(low) or math.isfinite(high) else ""
        raise fail(field, f"must be a finite number{bounds}, got {value!r}"[:300])
    return float(value)


def check_positive_or_null(value: object, field: str, high: float,
                           none_means: str) -> float | None:
    """A number in (0, ``high``], or None for JSON null (``none_means`` says what null does)."""
    if value is None:
        return None
    if not (_finite_number(value) and 0 < value <= high):
        raise fail(field, f"must be a number > 0 and at most {high:g}, or null for "
                          f"{none_means}; got {value!r}"[:300])
    return float(value)


def check_object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise fail(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def check_keys(body: dict, field: str, allowed: set[str], required: set[str] = frozenset()) -> None:
    """Unknown keys are refused (they are usually typos) and required ones must be present."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise fail(f"{field}.{unknown[0]}" if field else unknown[0],
                   f"unknown field; expected one of {sorted(allowed)}")
    missing = sorted(required - set(body))
    if missing:
        raise fail(f"{field}.{missing[0]}" if field else missing[0], "is required")


def check_comment(value: object) -> str:
    """A label's ``comment``: text of at most ``MAX_COMMENT_BYTES`` in UTF-8; '' for none
    (absent or null)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail("comment", f"must be text (a JSON string), got {type(value).__name__}")
    size = _utf8_size(value, "comment")
    if size > MAX_COMMENT_BYTES:
        raise fail("comment", f"must be at most {MAX_COMMENT_BYTES} bytes of UTF-8 text "
                              f"(10 KB), got {size}")
    return value


def check_answer(value: object) -> str:
    """A label's ``answer``: any JSON value, at most ``MAX_ANSWER_BYTES`` as compact JSON
    in UTF-8; returns that JSON text ('' for none: absent or null)."""
    if value is None:
        return ""
    check_json_numbers(value, "answer")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    size = _utf8_size(text, "answer")
    if size > MAX_ANSWER_BYTES:
        raise fail("answer", f"must be at most {MAX_ANSWER_BYTES} bytes as compact JSON "
                             f"(64 KB), got {size}")
    return text


def _utf8_size(text: str, field: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:  # JSON may carry lone surrogates ("\ud800"), UTF-8 not
        raise fail(field, "must be valid Unicode text (it holds a lone surrogate "
                          "escape such as \\ud800)") from None


# --- JSON numbers -------------------------------------------------------------------------
def parse_json(data: bytes | str) -> object:
    """Strict JSON: raises ValueError (also for NaN and Infinity) or RecursionError.

    Python's parser takes NaN and Infinity, which are not JSON: a NaN probability or
    payload value would be stored and later sent back as invalid JSON.  A number beyond
    the float range (``1e400``) parses as infinity; ``check_json_numbers`` finds it, so the
    caller can name the field.
    """
    return json.loads(data, parse_constant=_refuse_constant)


class NotJsonNumberError(ValueError):
    """NaN or Infinity in a document: not JSON at all."""


def _refuse_constant(name: str) -> object:
    raise NotJsonNumberError(f"{name} is not a JSON number; send finite numbers only")


def check_json_numbers(value: object, field: str = "") -> None:
    """Refuse a document holding a number outside the float range (or NaN), naming where
    (``payload.scores[2]``; ``field`` is the document's own path, if any)."""
    if not holds_bad_number(value):
        return
    path, number = _first_bad_number(value, field)
    raise fail(path or "body", bad_number_detail(number))


def bad_number_detail(number: float | int) -> str:
    """Why ``number`` (NaN, infinite, or an integer beyond the float range) is refused."""
    if isinstance(number, float) and math.isnan(number):
        return "must be a finite number, got NaN (not a JSON number)"
    sign = "-" if number < 0 else ""
    what = (f"an integer of {len(str(abs(number)))} digits" if isinstance(number, int)
            else f"{sign}1e400 or the like")
    return (f"must be a number of magnitude at most {MAX_FLOAT:.17g} (the float range), got "
            f"{what}, which JSON readers take for {sign}Infinity")


def holds_bad_number(value: object) -> bool:
    """Whether a JSON document holds a number outside the float range (or NaN)."""
    # A loop, not recursion: a document nested near the parser's depth limit must not
    # exhaust the stack.  Paths are built only once a bad number is known to be there.
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, int | float) and not -MAX_FLOAT <= node <= MAX_FLOAT:
            return True  # also NaN, which no comparison holds for
    return False


def _first_bad_number(value: object, field: str) -> tuple[str, float | int]:
    """The path and value of the first bad number, in document order."""
    stack = [(value, field)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((child, f"{path}.{key}" if path else str(key))
                         for key, child in reversed(node.items()))
        elif isinstance(node, list | tuple):
            stack.extend((child, f"{path or 'body'}[{index}]")
                         for index, child in reversed(list(enumerate(node))))
        elif holds_bad_number(node):
            return path, node
    raise ValueError("no bad number in the document")  # unreachable after _has_bad_number
