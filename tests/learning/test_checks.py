"""Tests for taskrank.learning._checks: probability and committee validation."""

from __future__ import annotations

import numpy as np
import pytest

from taskrank.learning._checks import (
    check_committee,
    check_proba,
    rule_boolean,
    rule_choice,
    rule_integer,
    rule_number,
)


def test_valid_proba_comes_back_as_float64():
    """Integer and list input is returned as a float64 array of the same values."""
    out = check_proba([[1, 0], [0, 1]])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 1.0]])


def test_normalised_float64_input_is_not_copied():
    """An already valid float64 matrix is passed through without a copy."""
    proba = np.array([[0.25, 0.75], [0.5, 0.5]])
    assert check_proba(proba) is proba


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.nan, "proba row 1 contains NaN"),
        (np.inf, "proba row 1 contains inf"),
        (-np.inf, "proba row 1 contains inf"),
        (-0.1, "proba row 1 contains a negative value"),
    ],
)
def test_bad_values_name_argument_and_row(bad, message):
    """NaN, inf and negative entries raise ValueError naming the argument and row."""
    proba = np.array([[0.5, 0.5], [bad, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match=message):
        check_proba(proba)


def test_row_sum_off_by_more_than_tolerance_names_row_and_sum():
    """A row summing to 1.1 is rejected with its index and sum."""
    with pytest.raises(ValueError, match=r"proba row 2 sums to 1\.1"):
        check_proba([[0.5, 0.5], [0.3, 0.7], [0.5, 0.6]])


def test_zero_row_is_rejected():
    """An all-zero row sums to 0 and is rejected."""
    with pytest.raises(ValueError, match="proba row 0 sums to 0"):
        check_proba([[0.0, 0.0]])


def test_rounded_rows_within_tolerance_are_renormalised():
    """Rows off by at most 1e-3 (rounded model output) are rescaled to sum to 1."""
    out = check_proba([[0.3333, 0.3333, 0.3333], [0.5004, 0.5, 0.0]])
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[0], [1 / 3] * 3)


def test_huge_finite_values_report_the_sum_not_a_crash():
    """Finite values whose sum overflows are reported as a bad sum."""
    with pytest.raises(ValueError, match="proba row 0 sums to inf"):
        check_proba([[1e308, 1e308]])


@pytest.mark.parametrize("shape", [(3,), (3, 1), (2, 2, 2), ()])
def test_wrong_shape_names_argument(shape):
    """Anything but (n, k >= 2) raises ValueError naming the argument and shape."""
    with pytest.raises(ValueError, match=r"scores must have shape \(n_items, n_classes >= 2\)"):
        check_proba(np.ones(shape), name="scores")


def test_non_numeric_input_raises_value_error():
    """Strings raise ValueError naming the argument, not a numpy TypeError."""
    with pytest.raises(ValueError, match="proba must be an array of numbers"):
        check_proba([["a", "b"]])


def test_empty_proba_is_allowed():
    """Zero items is a valid (empty) batch."""
    assert check_proba(np.zeros((0, 3))).shape == (0, 3)


def test_committee_error_names_member_and_row():
    """A bad committee row is named by member and item index."""
    committee = np.full((2, 3, 2), 0.5)
    committee[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="committee member 1 row 2 contains NaN"):
        check_committee(committee)


def test_committee_sum_error_names_member_and_row():
    """A committee row summing off 1 is named by member, row and sum."""
    committee = np.full((2, 2, 2), 0.5)
    committee[0, 1] = [0.9, 0.3]
    with pytest.raises(ValueError, match=r"committee member 0 row 1 sums to 1\.2"):
        check_committee(committee)


def test_committee_renormalises_and_keeps_shape():
    """Within-tolerance committee rows are rescaled, the (m, n, k) shape is kept."""
    out = check_committee([[[0.5, 0.5005]], [[0.2, 0.8]]])
    assert out.shape == (2, 1, 2)
    np.testing.assert_allclose(out.sum(axis=2), 1.0)


@pytest.mark.parametrize("shape", [(2, 2), (2, 2, 1), (1, 1, 1, 2)])
def test_committee_wrong_shape(shape):
    """Anything but (m, n, k >= 2) raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=r"committee must have shape \(n_members"):
        check_committee(np.ones(shape))


def test_rules_coerce_and_reject():
    """Setting rules coerce valid values and name the path in their errors."""
    assert rule_number()("w", 1) == 1.0
    assert rule_integer(1)("m", 5.0) == 5
    assert rule_boolean("b", True) is True
    assert rule_choice("model", {"a"})("c.model", "a") == "a"
    for rule, value in [
        (rule_number(), True),
        (rule_number(), float("nan")),
        (rule_number(), float("inf")),
        (rule_number(), 10**400),  # beyond the float range: no OverflowError
        (rule_number(), -1),
        (rule_number(0.0, 1.0, open_low=True), 0.0),
        (rule_integer(1), 2.5),
        (rule_integer(1), 0),
        (rule_boolean, 1),
        (rule_choice("model", {"a"}), "b"),
    ]:
        with pytest.raises(ValueError, match="'p"):
            rule("p", value)
