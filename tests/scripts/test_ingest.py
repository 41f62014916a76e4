"""``taskrank ingest``: JSONL, CSV and .npz over the real HTTP API and straight to Redis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskrank.queue import keys as K
from taskrank.queue.projects import create_project
from taskrank.scripts import ingest
from tests.scripts.helpers import http_server

LABELS = ["benign", "malignant"]


@pytest.fixture
def server(settings, r, tokens):
    """A served app with project 'p' (labels benign, malignant); yields (url, token)."""
    create_project(r, {"id": "p", "labels": LABELS})
    with http_server(settings) as url:
        yield url, tokens["platform"]


def _item(i: int, p: float = 0.3, **extra) -> dict:
    return {"id": f"i{i}", "predictions": {"mA": [p, round(1 - p, 6)]}, **extra}


def _write_jsonl(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))
    return str(path)


def _run(capsys, server, *argv: str) -> tuple[int, dict, str]:
    url, token = server
    code = ingest.main([*argv, "--url", url, "--token", token, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]) if out.strip() else {}, err


def test_bad_lines_are_reported_by_file_line_and_the_good_ones_go_in(capsys, server, tmp_path, r):
    """Bad lines (JSON, shape, rejected by the server) are named by file line; exit 1."""
    path = _write_jsonl(tmp_path / "items.jsonl", [
        _item(0), _item(1), "{not json", "", _item(2, p=0.9, skills=["a"]), "[1, 2]",
        {"id": "bad id!", "predictions": {"mA": [0.5, 0.5]}}, _item(3), _item(3),
        {"id": "i4", "predictions": {"mA": [0.5, 0.9]}}, _item(5)])
    rejects = tmp_path / "rejects.jsonl"
    code, summary, err = _run(capsys, server, "p", path, "--batch", "3", "--rejects",
                              str(rejects))
    assert code == 1
    assert (summary["created"], summary["updated"], summary["rejected"]) == (5, 0, 5)
    lines = {entry["line"]: entry for entry in map(json.loads, rejects.read_text().splitlines())}
    assert sorted(lines) == [3, 6, 7, 9, 10]
    assert "duplicate id in this batch (first at line 8)" in lines[9]["detail"]
    assert "not valid JSON" in lines[3]["detail"] and "JSON object" in lines[6]["detail"]
    assert lines[7]["id"] == "bad id!" and lines[10]["id"] == "i4"
    assert "line 10 (id 'i4'): predictions.mA must sum to 1" in err
    assert r.scard(K.items_key("p")) == 5


def test_a_duplicate_id_in_one_batch_points_at_the_first_line(capsys, server, tmp_path):
    """The server's 'first at index' becomes the file line of the first occurrence."""
    path = _write_jsonl(tmp_path / "dup.jsonl", [_item(0), _item(1), _item(0)])
    code, summary, err = _run(capsys, server, "p", path)
    assert code == 1 and summary["rejected"] == 1
    assert "line 3 (id 'i0'): duplicate id in this batch (first at line 1)" in err


def test_running_the_same_file_again_creates_nothing(capsys, server, tmp_path):
    """Ingest upserts by id: the second run updates every item and creates none; exit 0."""
    path = _write_jsonl(tmp_path / "items.jsonl", [_item(i, p=0.1 + i / 100) for i in range(25)])
    first = _run(capsys, server, "p", path, "--batch", "10")
    second = _run(capsys, server, "p", path, "--batch", "10")
    assert first[0] == second[0] == 0
    assert (first[1]["created"], first[1]["updated"]) == (25, 0)
    assert (second[1]["created"], second[1]["updated"], second[1]["rejected"]) == (0, 25, 0)
    assert second[1]["items_per_s"] > 0


def test_csv_columns_map_to_items_in_the_project_label_order(capsys, server, tmp_path, r):
    """p_<model>_<label> columns follow the project's label order whatever the file's order."""
    path = tmp_path / "items.csv"
    path.write_text(
        "id,p_mA_malignant,p_mA_benign,skills,boost,payload,f_1,f_0\n"
        'c1,0.8,0.2,radiology;oncology,1.5,"{""text"": ""x""}",2,1\n'
        "c2,,,,,,4,3\n"
        "c3,0.5,,,,,4,3\n"
        "c4,0.5,0.5,,high,,4,3\n")
    code, summary, err = _run(capsys, server, "p", str(path))
    assert code == 1 and (summary["created"], summary["rejected"]) == (2, 2)
    assert "line 4: predictions of mA (p_mA_ columns): some cells are empty" in err
    assert "line 5: boost: 'high' is not a number" in err
    stored = r.hgetall(K.item_key("p", "c1"))
    assert json.loads(stored["p"]) == {"mA": [0.2, 0.8]}
    assert json.loads(stored["f"]) == [1.0, 2.0]  # f_0 first
    assert stored["s"] == "oncology,radiology" and json.loads(stored["pl"]) == {"text": "x"}
    assert float(stored["b"]) == 1.5 and json.loads(r.hget(K.item_key("p", "c2"), "p")) == {}


def test_npz_rows_stream_in_with_default_ids_and_row_numbers(capsys, server, tmp_path, r):
    """.npz arrays become items (id = row index when no ids array); a bad row is named."""
    rng = np.random.default_rng(0)
    preds = rng.dirichlet([1, 1], size=30)
    preds[7] = [0.9, 0.9]
    np.savez_compressed(tmp_path / "items.npz", features=rng.normal(size=(30, 3)),
                        pred_mA=preds, pred_mB=preds[:, ::-1])
    code, summary, err = _run(capsys, server, "p", str(tmp_path / "items.npz"), "--batch", "8")
    assert code == 1 and (summary["created"], summary["rejected"]) == (29, 1)
    assert "row 7 (id '7'): predictions." in err
    assert r.sismember(K.items_key("p"), "29") and json.loads(
        r.hget(K.item_key("p", "0"), "p")).keys() == {"mA", "mB"}


def test_npz_ids_array_names_the_items(capsys, server, tmp_path, r):
    """An ids array of strings gives the item ids."""
    np.savez(tmp_path / "named.npz", ids=np.array(["a", "b"]), features=np.eye(2))
    code, summary, _ = _run(capsys, server, "p", str(tmp_path / "named.npz"))
    assert code == 0 and summary["created"] == 2
    assert r.smembers(K.items_key("p")) == {"a", "b"}


@pytest.mark.parametrize(("name", "content", "project", "message"), [
    ("missing.jsonl", None, "p", "no file"),
    ("items.txt", "{}", "p", "cannot tell the format"),
    ("items.jsonl", "{}", "nope", "no project 'nope'"),
    ("items.csv", "id,color\nx,red\n", "p", "bad CSV header: unknown column 'color'"),
    ("items.csv", "id,p_mA_benign\nx,1\n", "p", "lacks columns ['p_mA_malignant']"),
    ("items.npz", b"not a zip", "p", "cannot read"),
])
def test_unusable_input_exits_2_with_one_line(capsys, server, tmp_path, name, content, project,
                                             message):
    """Missing file, unknown format, unknown project, bad header: exit 2, one clear line."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    url, token = server
    assert ingest.main([project, str(path), "--url", url, "--token", token]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("taskrank ingest:")


def test_batches_over_the_server_limit_are_split(capsys, settings, r, tokens, tmp_path):
    """A 413 (batch above TASKRANK_MAX_BATCH_ITEMS) halves the batch until it fits."""
    create_project(r, {"id": "p", "labels": LABELS})
    path = _write_jsonl(tmp_path / "items.jsonl", [_item(i) for i in range(23)])
    with http_server(settings.replace(max_batch_items=5)) as url:
        code = ingest.main(["p", path, "--batch", "20", "--url", url, "--token",
                            tokens["platform"], "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["created"] == 23


def test_direct_writes_to_redis_without_the_api(capsys, monkeypatch, settings, r, tmp_path):
    """--direct ingests through queue.items on TASKRANK_REDIS_URL, same counts and reasons."""
    monkeypatch.setenv("TASKRANK_REDIS_URL", settings.redis_url)
    create_project(r, {"id": "p", "labels": LABELS})
    path = _write_jsonl(tmp_path / "items.jsonl", [_item(0), "oops", _item(1)])
    assert ingest.main(["p", path, "--direct", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["created"] == 2 and "line 2: not valid JSON" in out.err
    assert ingest.main(["p", path, "--direct", "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert (again["created"], again["updated"]) == (0, 2)
    assert ingest.main(["ghost", path, "--direct"]) == 2


JSONL_OUT_OF_RANGE = [
    _item(0),
    '{"id": "n1", "predictions": {"mA": [NaN, 0.5]}}',
    '{"id": "n2", "predictions": {"mA": [0.5, 0.5]}, "payload": {"x": [1, 1e400]}}',
    '{"id": "n3", "predictions": {"mA": [0.5, 0.5]}, "boost": 1' + "0" * 400 + "}",
    _item(4),
]


@pytest.mark.parametrize("direct", [False, True], ids=["http", "direct"])
def test_numbers_outside_the_float_range_reject_their_line_only(capsys, monkeypatch, settings,
                                                                r, tokens, tmp_path, direct):
    """NaN, 1e400 and a 400-digit integer in a JSONL line reject that line, named by line
    and field; the batch around it goes in (over HTTP and straight to Redis)."""
    create_project(r, {"id": "p", "labels": LABELS})
    path = _write_jsonl(tmp_path / "items.jsonl", JSONL_OUT_OF_RANGE)
    if direct:
        monkeypatch.setenv("TASKRANK_REDIS_URL", settings.redis_url)
        code = ingest.main(["p", path, "--direct", "--json"])
    else:
        with http_server(settings) as url:
            code = ingest.main(["p", path, "--url", url, "--token", tokens["platform"],
                                "--json"])
    out = capsys.readouterr()
    assert code == 1 and json.loads(out.out)["created"] == 2, out.err
    assert "line 2: not valid JSON: NaN is not a JSON number" in out.err
    assert "line 3 (id 'n2'): payload.x[1]: must be a number of magnitude at most" in out.err
    assert "line 4 (id 'n3'): boost must be a number" in out.err
    assert r.smembers(K.items_key("p")) == {"i0", "i4"}


def test_csv_and_npz_cells_outside_the_float_range_reject_their_row(capsys, server, tmp_path,
                                                                    r):
    """A CSV cell of 1e400, nan or inf (or a payload holding 1e400) and an .npz row holding
    NaN or inf reject that row alone, named; the others go in."""
    path = tmp_path / "items.csv"
    path.write_text("id,p_mA_benign,p_mA_malignant,payload\n"
                    "c1,0.5,0.5,\n"
                    "c2,1e400,0.5,\n"
                    "c3,nan,0.5,\n"
                    'c4,0.5,0.5,"{""x"": 1e400}"\n'
                    "c5,0.5,-inf,\n"
                    "c6,0.5,0.5,\n")
    code, summary, err = _run(capsys, server, "p", str(path))
    assert code == 1 and (summary["created"], summary["rejected"]) == (2, 4), err
    for line, cell in ((3, "'1e400'"), (4, "'nan'"), (6, "'-inf'")):
        assert f"line {line}: predictions of mA (p_mA_ columns): {cell} is not a finite" in err
    assert "line 5: payload.x: must be a number of magnitude at most" in err
    features = np.ones((6, 2))
    features[2, 1], features[4, 0] = np.inf, np.nan
    np.savez(tmp_path / "items.npz", ids=np.array([f"z{n}" for n in range(6)]),
             features=features)
    code, summary, err = _run(capsys, server, "p", str(tmp_path / "items.npz"))
    assert code == 1 and (summary["created"], summary["rejected"]) == (4, 2), err
    assert "row 2: features: the row holds NaN or infinity" in err and "row 4: features" in err
    assert r.smembers(K.items_key("p")) == {"c1", "c6", "z0", "z1", "z3", "z5"}


def test_direct_without_a_running_server_is_refused(capsys, monkeypatch, tmp_path):
    """--direct in a shell that finds no server's Redis: exit 2 with what to set, and no
    empty Redis started in ./var."""
    monkeypatch.delenv("TASKRANK_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    path = _write_jsonl(tmp_path / "items.jsonl", [_item(0)])
    assert ingest.main(["p", path, "--direct"]) == 2
    err = capsys.readouterr().err
    assert "no running taskrank found" in err and "TASKRANK_DATA_DIR" in err
    assert not (tmp_path / "var" / "appendonlydir").exists()
