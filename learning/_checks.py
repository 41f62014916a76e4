"""Validation shared by the scoring modules.

Probability rows arrive from outside models, often rounded to a few decimals, so rows
whose sum is within ``SUM_TOLERANCE`` of 1 are renormalised and anything further off is
rejected with the offending row named. The happy path costs a handful of whole-array
reductions (no per-row Python); the slow search for *which* row is wrong runs only once
an error is certain.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Collection

import numpy as np

SUM_TOLERANCE = 1e-3  # real model outputs arrive rounded; ingest (queue/items.py) uses it too
# Sums closer to 1 than this are left alone: dividing would cost a full pass over the
# array to change values in the last bits, below anything a score can resolve.
_RENORMALISE_EPS = 1e-9


def check_proba(proba: object, name: str = "proba") -> np.ndarray:
    """Validate a probability matrix and return it as float64 with rows summing to 1.

    Parameters
    ----------
    proba : array-like of shape (n_items, n_classes)
        One probability row per item; ``n_classes >= 2``.
    name : str
        Argument name used in error messages.

    Returns
    -------
    proba : ndarray of shape (n_items, n_classes), float64
        The input (not copied when already float64 and normalised) or a renormalised copy.

    Raises
    ------
    ValueError
        Wrong shape, NaN, inf, a negative value, or a row whose sum is off 1 by more
        than 1e-3; the message names the argument and the first offending row.
    """
    arr = _as_float_array(proba, name)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must have shape (n_items, n_classes >= 2), got shape {arr.shape}")
    return _check_rows(arr, name, lambda row: f"row {row}")


def check_committee(committee: object, name: str = "committee") -> np.ndarray:
    """Validate a committee of probability matrices, one per member.

    Parameters
    ----------
    committee : array-like of shape (n_members, n_items, n_classes)
        ``committee[i, j]`` is member ``i``'s probability row for item ``j``.
    name : str
        Argument name used in error messages.

    Returns
    -------
    committee : ndarray of shape (n_members, n_items, n_classes), float64
        Rows summing to 1 (renormalised within tolerance).

    Raises
    ------
    ValueError
        As :func:`check_proba`; the message names the member and the item row.
    """
    arr = _as_float_array(committee, name)
    if arr.ndim != 3 or arr.shape[2] < 2:
        raise ValueError(
            f"{name} must have shape (n_members, n_items, n_classes >= 2), got shape {arr.shape}"
        )
    n_items = arr.shape[1]
    flat = _check_rows(
        arr.reshape(-1, arr.shape[2]),
        name,
        lambda row: f"member {row // n_items} row {row % n_items}",
    )
    return flat.reshape(arr.shape)


def check_matrix(values: object, name: str, n_rows: int | None = None) -> np.ndarray:
    """Validate a finite 2-d float matrix such as item features.

    Parameters
    ----------
    values : array-like of shape (n_rows, n_columns)
        ``n_columns >= 1``.
    name : str
        Argument name used in error messages.
    n_rows : int, optional
        Required number of rows (one per item), when known.

    Returns
    -------
    matrix : ndarray of shape (n_rows, n_columns), float64
    """
    arr = _as_float_array(values, name)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n_rows, n_features >= 1), got shape {arr.shape}")
    _check_length(name, arr.shape[0], n_rows)
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{name} row {row} contains NaN or inf")
    return arr


def check_vector(values: object, name: str, n_rows: int | None = None) -> np.ndarray:
    """Validate a finite 1-d float vector such as per-item boosts.

    Parameters
    ----------
    values : array-like of shape (n_rows,)
    name : str
        Argument name used in error messages.
    n_rows : int, optional
        Required length (one per item), when known.

    Returns
    -------
    vector : ndarray of shape (n_rows,), float64
    """
    arr = _as_float_array(values, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (n_items,), got shape {arr.shape}")
    _check_length(name, arr.shape[0], n_rows)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} row {int(np.flatnonzero(~np.isfinite(arr))[0])} is not finite")
    return arr


def _check_length(name: str, got: int, expected: int | None) -> None:
    if expected is not None and got != expected:
        raise ValueError(f"{name} has {got} rows, expected {expected} (one per item)")


def _as_float_array(values: object, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers: {exc}") from exc


def _check_rows(arr: np.ndarray, name: str, where: Callable[[int], str]) -> np.ndarray:
    """Check finite, non-negative rows summing to ~1; renormalise within tolerance."""
    if arr.size == 0:
        return arr
    # einsum sums short rows several times faster than arr.sum(axis=1), and unlike a
    # BLAS matrix-vector product it does not wake a thread pool for a 10-column matrix.
    sums = np.einsum("ij->i", arr)
    # NaN and inf propagate into the row sum, so finite sums spare a full isfinite pass.
    if not np.isfinite(sums).all():
        bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad_rows.size:  # otherwise huge finite values overflowed: the sum check says so
            row = int(bad_rows[0])
            what = "NaN" if np.isnan(arr[row]).any() else "inf"
            raise ValueError(f"{name} {where(row)} contains {what}")
    if arr.min() < 0:
        row = int(np.flatnonzero((arr < 0).any(axis=1))[0])
        raise ValueError(f"{name} {where(row)} contains a negative value")
    off = np.abs(sums - 1.0)
    worst = off.max()
    if not worst <= SUM_TOLERANCE:
        row = int(np.flatnonzero(~(off <= SUM_TOLERANCE))[0])
        raise ValueError(
            f"{name} {where(row)} sums to {sums[row]:.6g}, expected 1 (tolerance {SUM_TOLERANCE:g})"
        )
    if worst > _RENORMALISE_EPS:
        arr = arr / sums[:, None]
    return arr


# Rules for scalar settings (used by priority.Strategy): each takes the dotted path of the
# setting and the value, and returns the value coerced to its type or raises ValueError.
Rule = Callable[[str, object], object]


def rule_choice(kind: str, names: Collection[str]) -> Rule:
    """Rule accepting one of ``names``; the error lists them."""

    def check(path: str, value: object) -> str:
        if not isinstance(value, str) or value not in names:
            raise ValueError(
                f"unknown {kind} {value!r} for '{path}'; expected one of {sorted(names)}"
            )
        return value

    return check


def rule_number(low: float = 0.0, high: float = math.inf, *, open_low: bool = False) -> Rule:
    """Rule accepting a finite real number in ``[low, high]`` (``(low, high]`` if open)."""

    def check(path: str, value: object) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        # Comparisons, not math.isfinite: they also refuse an int beyond the float range.
        ok = ok and -sys.float_info.max <= value <= sys.float_info.max and (
            value > low if open_low else value >= low)
        if not ok or value > high:
            bracket = "(" if open_low else "["
            raise ValueError(
                f"'{path}' must be a number in {bracket}{low:g}, {high:g}], got {value!r}"
            )
        return float(value)

    return check


def rule_integer(low: int, high: int | None = None) -> Rule:
    """Rule accepting an integer in ``[low, high]`` (an integral float such as 5.0 too)."""

    def check(path: str, value: object) -> int:
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral or value < low or (
                high is not None and value > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            raise ValueError(f"'{path}' must be an integer {bounds}, got {value!r}")
        return int(value)

    return check


def rule_boolean(path: str, value: object) -> bool:
    """Rule accepting exactly ``True`` or ``False`` (not 0 or 1)."""
    if not isinstance(value, bool):
        raise ValueError(f"'{path}' must be true or false, got {value!r}")
    return value
