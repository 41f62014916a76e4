"""Item files for ``taskrank ingest`` and ``taskrank backfill --from``, read as streams.

JSONL (one item object a line), CSV (``id``, ``skills``, ``boost``, ``gold``, ``payload``,
``f_<n>`` feature and ``p_<model>_<label>`` prediction columns), ``.npz`` (``ids``,
``features``, ``pred_<model>``) and Label Studio's JSON task export (``.json``: a list of
tasks, mapped by ``queue/label_studio.py``); ``.gz`` too except for ``.npz``.  Nothing but
the Label Studio export (one JSON document) is read whole: a record at a time (rows of
``.npz`` arrays in slices), so a file of any length fits.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taskrank.queue import label_studio as ls
from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.validation import (
    ID_PATTERN,
    NotJsonNumberError,
    check_json_numbers,
    parse_json,
)

FORMATS = ("jsonl", "csv", "npz", "labelstudio")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".npz": "npz",
             ".json": "labelstudio"}
_CSV_FIELDS = ("id", "skills", "boost", "gold", "payload")


class FileFormatError(ValueError):
    """The file cannot be used at all (missing, unknown format, bad header or arrays)."""


@dataclass
class Record:
    """One item of a file: ``item`` (with ``raw`` JSON bytes when it came as JSON), or
    ``error`` saying why the line cannot become an item."""

    line: int  # file line (JSONL, CSV: where the record starts) or row index (npz)
    item: dict | None = None
    raw: bytes | None = None
    error: str | None = None


def detect_format(path: str, given: str | None = None) -> str:
    """The format named by ``--format`` or by the file's extension (``.gz`` aside)."""
    if given:
        return given
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    fmt = _SUFFIXES.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise FileFormatError(f"cannot tell the format of {path!r} from its extension; use "
                              ".jsonl, .csv, .npz or .json (Label Studio's JSON export), or "
                              "--format jsonl|csv|npz|labelstudio")
    return fmt


def open_binary(path: str) -> io.BufferedIOBase:
    """The file (``-``: standard input), decompressed when it ends in ``.gz``."""
    if path == "-":
        return sys.stdin.buffer
    try:
        if not path.lower().endswith(".gz"):
            return open(path, "rb")  # noqa: SIM115 - the caller's generator closes it
        unpacked = gzip.open(path, "rb")  # noqa: SIM115 - as above
    except OSError as error:
        raise FileFormatError(f"cannot read {path!r}: {error.strerror or error}") from None
    try:
        unpacked.peek(1)  # fail here, not mid-stream, on a file that is not gzip
    except (OSError, EOFError) as error:
        unpacked.close()
        raise FileFormatError(f"cannot read {path!r} as gzip: {error}") from None
    return unpacked


# --- JSONL ----------------------------------------------------------------------------------
def jsonl_records(path: str) -> Iterator[Record]:
    """One record per non-blank line; a line that is not one JSON object is an error."""
    handle = open_binary(path)
    return _jsonl(handle)


def _jsonl(handle: io.BufferedIOBase) -> Iterator[Record]:
    with handle:
        for number, line in enumerate(handle, start=1):
            raw = line.strip()
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw:
                continue
            try:  # strict, as the API parses it: NaN and Infinity are not JSON
                item = parse_json(raw)
            except UnicodeDecodeError:
                yield Record(number, error="the line is not valid UTF-8")
                continue
            except NotJsonNumberError as error:
                yield Record(number, error=f"not valid JSON: {error}")
                continue
            except RecursionError:
                yield Record(number, error="the line nests arrays or objects too deeply")
                continue
            except ValueError as error:
                yield Record(number, error=f"not valid JSON: {getattr(error, 'msg', error)} "
                                           f"(column {getattr(error, 'colno', '?')})")
                continue
            if not isinstance(item, dict):
                yield Record(number, error="a line must hold one JSON object (an item), got "
                                           f"{type(item).__name__}")
                continue
            yield Record(number, item, raw)


# --- Label Studio's JSON export ---------------------------------------------------------------
def label_studio_records(path: str, labels: list[str]) -> Iterator[Record]:
    """One record per task of a Label Studio JSON export (``line``: the task's 1-based
    position in the list); a task that cannot become an item is an error record."""
    with open_binary(path) as handle:
        try:
            tasks = parse_json(handle.read().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as error:
            raise FileFormatError(f"{path!r} is not a JSON document: {error}"[:300]) from None
    if not isinstance(tasks, list):
        raise FileFormatError(f"{path!r} is not a Label Studio JSON export: that is a JSON "
                              f"list of tasks, this holds a {type(tasks).__name__}")
    return _label_studio_tasks(tasks, labels)


def _label_studio_tasks(tasks: list, labels: list[str]) -> Iterator[Record]:
    for number, task in enumerate(tasks, start=1):
        try:
            yield Record(number, ls.task_item(task, labels))
        except ls.NotUsable as error:
            task_id = task.get("id") if isinstance(task, dict) else None
            who = f"(task id {task_id}) " if task_id is not None else ""
            hint = (" (export the project as JSON, not JSON-MIN)"
                    if isinstance(task, dict) and "data" not in task else "")
            yield Record(number, error=f"{who}{error}{hint}")


# --- CSV ------------------------------------------------------------------------------------
@dataclass
class CsvColumns:
    """Where each part of an item sits in a CSV row."""

    width: int
    fixed: dict[str, int] = field(default_factory=dict)  # id, skills, boost, gold, payload
    features: list[int] = field(default_factory=list)
    models: dict[str, list[int]] = field(default_factory=dict)  # model -> one per label


def csv_records(path: str, labels: list[str]) -> Iterator[Record]:
    """Check the header against the project's ``labels`` now; records as iterated."""
    text = io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        text.close()
        raise FileFormatError(f"{path!r} is empty; a CSV needs a header line") from None
    except (UnicodeDecodeError, csv.Error) as error:
        text.close()
        raise FileFormatError(f"cannot read the CSV header of {path!r}: {error}") from None
    try:
        columns = csv_columns(header, labels)
    except FileFormatError:
        text.close()
        raise
    return _csv(text, reader, columns)


def csv_columns(header: list[str], labels: list[str]) -> CsvColumns:
    """Map a header to item parts; a ``FileFormatError`` names the first bad column."""
    columns = CsvColumns(len(header))
    by_label = sorted(labels, key=len, reverse=True)  # the longest label suffix wins
    found: dict[str, dict[str, int]] = {}
    for index, name in enumerate(header):
        name = name.strip()
        if name in columns.fixed:
            raise FileFormatError(f"bad CSV header: column {name!r} appears twice")
        if name in _CSV_FIELDS:
            columns.fixed[name] = index
        elif name.startswith("f_") and name[2:].isdigit():
            columns.features.append((int(name[2:]), index))
        elif name.startswith("p_") and (label := next(
                (lab for lab in by_label if name.endswith("_" + lab) and
                 len(name) > len(lab) + 3), None)):
            model = name[2:-len(label) - 1]
            if not ID_PATTERN.fullmatch(model):
                raise FileFormatError(f"bad CSV header: model name {model!r} in column {name!r} "
                                      "must be 1-128 characters of A-Z a-z 0-9 . _ -")
            if label in found.setdefault(model, {}):
                raise FileFormatError(f"bad CSV header: column {name!r} appears twice")
            found[model][label] = index
        else:
            raise FileFormatError(
                f"bad CSV header: unknown column {name!r}; expected id, skills, boost, gold, "
                f"payload, f_<n> (features) or p_<model>_<label> with a label of {labels}"[:400])
    if "id" not in columns.fixed:
        raise FileFormatError("bad CSV header: no 'id' column")
    for model, cells in found.items():
        missing = [f"p_{model}_{label}" for label in labels if label not in cells]
        if missing:
            raise FileFormatError(f"bad CSV header: model {model!r} lacks columns {missing}; "
                                  "give one p_<model>_<label> column per project label"[:400])
        columns.models[model] = [cells[label] for label in labels]
    if len({n for n, _ in columns.features}) != len(columns.features):
        raise FileFormatError("bad CSV header: a feature column f_<n> appears twice")
    columns.features = [index for _, index in sorted(columns.features)]
    if not columns.features and not columns.models:
        raise FileFormatError("bad CSV header: no f_<n> feature or p_<model>_<label> "
                              "prediction columns; an item needs one or the other")
    return columns


def _csv(text: io.TextIOWrapper, reader: Iterator[list[str]],
         columns: CsvColumns) -> Iterator[Record]:
    with text:
        end = reader.line_num
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as error:
                yield Record(start, error=f"cannot read this CSV record: {error}")
                return  # the reader cannot resynchronise after a broken quote
            end = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                yield Record(start, csv_item(row, columns))
            except ValueError as error:
                yield Record(start, error=str(error))


def csv_item(row: list[str], columns: CsvColumns) -> dict:
    """An item object from one CSV row; ``ValueError`` says what is wrong with it."""
    if len(row) != columns.width:
        raise ValueError(f"expected {columns.width} cells as in the header, got {len(row)}")
    cell = {name: row[index] for name, index in columns.fixed.items()}
    item: dict = {"id": cell["id"].strip()}
    if cell.get("skills", "").strip():
        item["skills"] = [tag.strip() for tag in cell["skills"].split(";") if tag.strip()]
    if cell.get("boost", "").strip():
        item["boost"] = _number(cell["boost"], "boost")
    if cell.get("gold", "").strip():
        item["gold"] = cell["gold"].strip()
    if cell.get("payload", "").strip():
        item["payload"] = _payload(cell["payload"])
    features = _vector(row, columns.features, "features (f_ columns)")
    if features is not None:
        item["features"] = features
    predictions = {}
    for model, indexes in columns.models.items():
        vector = _vector(row, indexes, f"predictions of {model} (p_{model}_ columns)")
        if vector is not None:
            predictions[model] = vector
    if predictions:
        item["predictions"] = predictions
    return item


def _payload(text: str) -> object:
    """A payload cell's JSON, strict and within the float range: such a number would be
    sent as Infinity, which is not JSON, and the server would refuse the whole batch."""
    try:
        payload = parse_json(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"payload is not valid JSON: {error}") from None
    try:
        check_json_numbers(payload, "payload")
    except InvalidInputError as error:
        raise ValueError(error.detail) from None
    return payload


def _vector(row: list[str], indexes: list[int], what: str) -> list[float] | None:
    cells = [row[index].strip() for index in indexes]
    if not any(cells):
        return None
    if not all(cells):
        raise ValueError(f"{what}: some cells are empty; fill all of them or none")
    return [_number(value, what) for value in cells]


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text.strip()!r} is not a number"[:200]) from None
    if not math.isfinite(value):  # nan, inf, or beyond the float range (1e400)
        raise ValueError(f"{what}: {text.strip()!r} is not a finite number within the float "
                         "range"[:200])
    return value


# --- npz ------------------------------------------------------------------------------------
@dataclass
class _Array:
    member: str
    shape: tuple
    dtype: np.dtype
    streamable: bool


def npz_records(path: str, labels: list[str], slice_rows: int = 1000) -> tuple[int, Iterator]:
    """(number of rows, records): arrays are checked now and read ``slice_rows`` at a time."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise FileFormatError(f"cannot read {path!r} as .npz: "
                              f"{getattr(error, 'strerror', None) or error}") from None
    try:
        arrays = {member.removesuffix(".npy"): _header(archive, member)
                  for member in archive.namelist()}
        n = _check_arrays(arrays, len(labels))
    except FileFormatError:
        archive.close()
        raise
    return n, _npz(archive, arrays, n, slice_rows)


def _header(archive: zipfile.ZipFile, member: str) -> _Array:
    with archive.open(member) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                return _loaded_header(archive, member)
        except ValueError as error:
            raise FileFormatError(f"array {member!r} is not a .npy array: {error}") from None
    if dtype.hasobject:
        raise FileFormatError(f"array {member!r} holds Python objects, which are not read (no "
                              "pickles); save ids as strings: np.asarray(ids, dtype=str)")
    return _Array(member, tuple(shape), dtype, not fortran or len(shape) < 2)


def _loaded_header(archive: zipfile.ZipFile, member: str) -> _Array:
    with archive.open(member) as handle:
        array = np.lib.format.read_array(handle, allow_pickle=False)
    return _Array(member, array.shape, array.dtype, False)


def _check_arrays(arrays: dict[str, _Array], k: int) -> int:
    unknown = [name for name in arrays if name not in ("ids", "features")
               and not name.startswith("pred_")]
    if unknown:
        raise FileFormatError(f"unknown array {unknown[0]!r} in the .npz; expected ids, "
                              "features and pred_<model> arrays")
    if "features" not in arrays and not any(name.startswith("pred_") for name in arrays):
        raise FileFormatError("the .npz needs a 'features' array or pred_<model> arrays")
    lengths = {name: array.shape[0] if array.shape else None for name, array in arrays.items()}
    for name, array in arrays.items():
        want = 1 if name == "ids" else 2
        if len(array.shape) != want:
            raise FileFormatError(f"array {name!r} must have {want} dimension(s), "
                                  f"got shape {array.shape}")
        if name != "ids" and array.dtype.kind not in "fiub":
            raise FileFormatError(f"array {name!r} must hold numbers, got dtype {array.dtype}")
        if name.startswith("pred_"):
            if not ID_PATTERN.fullmatch(name[5:]):
                raise FileFormatError(f"model name {name[5:]!r} of array {name!r} must be "
                                      "1-128 characters of A-Z a-z 0-9 . _ -")
            if array.shape[1] != k:
                raise FileFormatError(f"array {name!r} has {array.shape[1]} columns; the "
                                      f"project has {k} labels")
    if len(set(lengths.values())) != 1:
        raise FileFormatError(f"the arrays have different numbers of rows: {lengths}")
    return next(iter(lengths.values()))


def _npz(archive: zipfile.ZipFile, arrays: dict[str, _Array], n: int,
         slice_rows: int) -> Iterator[Record]:
    with archive:
        readers = {name: _rows(archive, array, slice_rows) for name, array in arrays.items()}
        for start in range(0, n, slice_rows):
            parts = {name: next(reader) for name, reader in readers.items()}
            count = len(next(iter(parts.values())))
            ids = ([str(value) for value in parts["ids"]] if "ids" in parts
                   else [str(start + i) for i in range(count)])
            features = parts["features"].tolist() if "features" in parts else None
            preds = {name[5:]: rows.tolist() for name, rows in parts.items()
                     if name.startswith("pred_")}
            not_finite = _not_finite(parts)
            for i in range(count):
                if i in not_finite:
                    yield Record(start + i, error=f"{not_finite[i]}: the row holds NaN or "
                                                  "infinity; send finite numbers")
                    continue
                item: dict = {"id": ids[i]}
                if features is not None:
                    item["features"] = features[i]
                if preds:
                    item["predictions"] = {model: rows[i] for model, rows in preds.items()}
                yield Record(start + i, item)


def _not_finite(parts: dict[str, np.ndarray]) -> dict[int, str]:
    """Row index -> the first array holding NaN or infinity in that row (a float array's
    rows would reach the API as NaN or Infinity, which are not JSON)."""
    found: dict[int, str] = {}
    for name, rows in parts.items():
        if name != "ids" and rows.dtype.kind == "f":
            for index in np.flatnonzero(~np.isfinite(rows).all(axis=1)).tolist():
                found.setdefault(index, name)
    return found


def _rows(archive: zipfile.ZipFile, array: _Array, slice_rows: int) -> Iterator[np.ndarray]:
    """Slices of ``slice_rows`` rows, read from the zip member as it decompresses."""
    if not array.streamable:
        whole = _load(archive, array.member)
        for start in range(0, len(whole), slice_rows):
            yield whole[start:start + slice_rows]
        return
    row_shape = array.shape[1:]
    row_bytes = array.dtype.itemsize * math.prod(row_shape)
    with archive.open(array.member) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        read_header(handle)
        for start in range(0, array.shape[0], slice_rows):
            count = min(slice_rows, array.shape[0] - start)
            data = handle.read(count * row_bytes) if row_bytes else b""
            if len(data) != count * row_bytes:
                raise FileFormatError(f"array {array.member!r} ends early (truncated file)")
            yield np.frombuffer(data, dtype=array.dtype).reshape((count, *row_shape))


def _load(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    with archive.open(member) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


# --- priorities (backfill --from) -----------------------------------------------------------
def priority_records(path: str, fmt: str) -> Iterator[tuple[int, str | None, float | str]]:
    """(line, item id, priority) per record, or (line, None, why) for a bad one."""
    if fmt == "jsonl":
        source = ((record.line, record.item, record.error) for record in jsonl_records(path))
    elif fmt == "csv":
        source = _priority_csv(path)
    else:
        raise FileFormatError("--from takes a CSV (id,priority) or JSONL file")
    return _priorities(source)


def _priority_csv(path: str) -> Iterator[tuple[int, dict | None, str | None]]:
    text = io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text)
    if not reader.fieldnames or {"id", "priority"} - {f.strip() for f in reader.fieldnames}:
        text.close()
        raise FileFormatError(f"bad CSV header: {path!r} needs the columns id,priority; got "
                              f"{reader.fieldnames}"[:300])
    return _priority_rows(text, reader)


def _priority_rows(text: io.TextIOWrapper, reader: csv.DictReader) -> Iterator:
    with text:
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            yield start, {key.strip(): value for key, value in row.items() if key}, None


def _priorities(source: Iterator) -> Iterator[tuple[int, str | None, float | str]]:
    for line, item, error in source:
        if error:
            yield line, None, error
            continue
        iid, value = item.get("id"), item.get("priority")
        if not isinstance(iid, str) or not ID_PATTERN.fullmatch(iid.strip()):
            yield line, None, f"id must be 1-128 characters of A-Z a-z 0-9 . _ -, got {iid!r}"
            continue
        try:
            priority = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
            priority = math.nan
        if isinstance(value, bool) or not math.isfinite(priority):
            yield line, None, f"priority must be a finite number, got {value!r}"[:200]
            continue
        yield line, iid.strip(), priority
