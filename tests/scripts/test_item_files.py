"""Item files read as streams: JSONL (plain and gzip), CSV columns and .npz rows, with a
per-line error for what cannot become an item and FileFormatError for an unusable file."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from taskrank.scripts.item_files import (
    FileFormatError,
    csv_records,
    detect_format,
    jsonl_records,
    npz_records,
)


def test_format_comes_from_the_extension_or_the_flag(tmp_path):
    assert detect_format("items.jsonl.gz") == "jsonl"
    assert detect_format("items.CSV") == "csv"
    assert detect_format("items.txt", given="npz") == "npz"
    with pytest.raises(FileFormatError, match="--format"):
        detect_format("items.txt")


@pytest.mark.parametrize("compressed", [False, True])
def test_jsonl_yields_items_and_numbered_errors(tmp_path, compressed):
    lines = [json.dumps({"id": "a", "features": [1, 2]}), "", "{not json", "[1, 2]",
             json.dumps({"id": "b", "features": [3, 4]})]
    text = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("items.jsonl.gz" if compressed else "items.jsonl")
    path.write_bytes(gzip.compress(text) if compressed else text)
    records = list(jsonl_records(str(path)))
    assert [(r.line, r.item and r.item["id"]) for r in records if r.item] == [(1, "a"), (5, "b")]
    errors = {r.line: r.error for r in records if r.error}
    assert set(errors) == {3, 4}
    assert "not valid JSON" in errors[3] and "one JSON object" in errors[4]


def test_a_file_that_is_not_gzip_is_refused_up_front(tmp_path):
    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(b'{"id": "a"}\n')
    with pytest.raises(FileFormatError, match="gzip"):
        jsonl_records(str(path))


def test_csv_columns_become_features_and_predictions(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,skills,f_0,f_1,p_m_no,p_m_yes\n"
                    "a,radiology,0.5,1.5,0.2,0.8\n"
                    "b,,x,1,0.5,0.5\n")
    records = list(csv_records(str(path), ["no", "yes"]))
    first = records[0].item
    assert first["id"] == "a" and first["features"] == [0.5, 1.5]
    assert first["predictions"] == {"m": [0.2, 0.8]} and first["skills"] == ["radiology"]
    assert records[1].item is None and "'x' is not a number" in records[1].error


def test_npz_rows_are_read_in_slices(tmp_path):
    path = tmp_path / "items.npz"
    features = np.arange(10, dtype=float).reshape(5, 2)
    np.savez(path, ids=np.array([f"i{n}" for n in range(5)]), features=features)
    n, records = npz_records(str(path), ["no", "yes"], slice_rows=2)
    items = [r.item for r in records]
    assert n == 5 and [item["id"] for item in items] == ["i0", "i1", "i2", "i3", "i4"]
    assert items[4]["features"] == [8.0, 9.0]


def test_npz_with_unequal_arrays_is_unusable(tmp_path):
    path = tmp_path / "items.npz"
    np.savez(path, ids=np.array(["a", "b"]), features=np.zeros((3, 2)))
    with pytest.raises(FileFormatError, match="different numbers of rows"):
        npz_records(str(path), ["no", "yes"])
