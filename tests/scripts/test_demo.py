"""``taskrank demo``: a short run against a real server and RQ worker."""

from __future__ import annotations

from taskrank.scripts import demo
from tests.scripts.helpers import http_server, rq_worker


def test_a_short_demo_labels_reports_and_plots(settings, r, tokens, tmp_path, capsys):
    """30 labels with a report every 15: exit 0, two report lines, the PNG is written."""
    plot = tmp_path / "curve.png"
    with http_server(settings) as url, rq_worker(settings, r):
        code = demo.main(["--url", url, "--token", tokens["admin"], "--labels", "30",
                          "--every", "15", "--wait", "1", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "labels   15 |" in out and "labels   30 |" in out and "done: 30 labels" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unreachable_server_exits_2(capsys):
    """No server at --url: exit 2 with one line."""
    assert demo.main(["--url", "http://127.0.0.1:9", "--token", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taskrank demo: cannot reach") and len(err.splitlines()) == 1
