"""The shared checks: strict JSON and numbers within the float range, each failure naming
where it is."""

from __future__ import annotations

import math

import pytest

from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.validation import (
    check_int,
    check_json_numbers,
    check_number,
    check_positive_or_null,
    holds_bad_number,
    parse_json,
)

HUGE_INT = "1" + "0" * 400


@pytest.mark.parametrize(("text", "field"), [
    ('{"a": [1, {"b": 1e400}]}', "a[1].b"),
    ('{"a": -1e999}', "a"),
    ("[0, " + HUGE_INT + "]", "body[1]"),
    ('{"x": {"y": [[-' + HUGE_INT + "]]}}", "x.y[0][0]"),
    ('{"first": 1e400, "second": 1e400}', "first"),
])
def test_a_number_beyond_the_float_range_is_refused_naming_its_path(text, field):
    """1e400 (parsed as infinity) and integers beyond the float range are refused with the
    path of the first one, in document order."""
    document = parse_json(text)
    assert holds_bad_number(document)
    with pytest.raises(InvalidInputError) as raised:
        check_json_numbers(document)
    assert raised.value.extra["errors"][0]["field"] == field
    assert raised.value.detail.startswith(f"{field}: must be a number of magnitude at most")


def test_a_field_prefixes_the_path():
    """The caller's field name starts the path (an item's payload)."""
    with pytest.raises(InvalidInputError, match=r"^payload\.scores\[2\]: "):
        check_json_numbers({"scores": [1, 2, 1e400]}, "payload")


def test_documents_within_range_pass():
    """The largest finite floats, long in-range integers, strings, booleans and null pass."""
    document = parse_json('{"a": [1.7976931348623157e308, -1.7976931348623157e308, 1e-400], '
                          '"b": NINES, "c": "1e400", "d": [true, false, null], "e": {}}'
                          .replace("NINES", "9" * 300))
    assert not holds_bad_number(document)
    check_json_numbers(document)


def test_nan_passed_in_by_a_caller_is_refused():
    """A NaN from Python (never from parse_json) is refused as not a JSON number."""
    with pytest.raises(InvalidInputError, match="NaN"):
        check_json_numbers({"x": [math.nan]})


def test_deep_nesting_does_not_exhaust_the_stack():
    """A document nested as deep as the parser allows is walked without recursion."""
    document = parse_json("[" * 900 + "1e400" + "]" * 900)
    with pytest.raises(InvalidInputError):
        check_json_numbers(document)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_parse_json_refuses_non_json_constants(literal):
    """NaN and Infinity, which Python's parser accepts, are not JSON."""
    with pytest.raises(ValueError, match=f"{literal} is not a JSON number"):
        parse_json(f'{{"x": {literal}}}')


def test_number_checks_refuse_a_huge_integer_without_overflowing():
    """check_number, check_int and check_positive_or_null refuse a 400-digit integer with
    their message (math.isfinite would raise OverflowError on it)."""
    huge = int(HUGE_INT)
    for check in (lambda: check_number(huge, "x"), lambda: check_int(huge, "x", 0, 10),
                  lambda: check_positive_or_null(huge, "x", 1e6, "no limit")):
        with pytest.raises(InvalidInputError, match="^x: must be"):
            check()
