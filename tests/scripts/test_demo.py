"""``taskrank demo``: a short run against a real server and RQ worker."""

from __future__ import annotations

import pytest

from taskrank.scripts import demo
from tests.scripts.helpers import http_server, rq_worker


def test_a_short_demo_labels_reports_and_plots(settings, r, tokens, tmp_path, capsys):
    """30 labels with a report every 15: exit 0, two report lines showing the server's
    cross-validated model (the wait ends once it is there), the PNG is written."""
    plot = tmp_path / "curve.png"
    with http_server(settings) as url, rq_worker(settings, r):
        code = demo.main(["--url", url, "--token", tokens["admin"], "--labels", "30",
                          "--every", "15", "--wait", "30", "--random-draws", "3",
                          "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "labels   15 |" in out and "labels   30 |" in out and "done: 30 labels" in out
    assert "labels   30 | model v" in out and "cv accuracy" in out, out
    assert "(random items, random expert, mean of 3 draws: " in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert demo.explain_curves(3) in out and "UNBIASED" in out and "BIASED" in out
    assert "the mean of 3 seeded draws" in demo.explain_curves(3)


def test_an_unreachable_server_exits_2(capsys):
    """No server at --url: exit 2 with one line."""
    assert demo.main(["--url", "http://127.0.0.1:9", "--token", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taskrank demo: cannot reach") and len(err.splitlines()) == 1


def test_bad_random_draws_exits_2(capsys):
    """--random-draws 0: exit 2 with one line naming the flag, before reaching any server."""
    assert demo.main(["--url", "http://127.0.0.1:9", "--token", "x", "--random-draws", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--random-draws" in err and len(err.splitlines()) == 1


def test_the_random_baseline_is_the_mean_of_seeded_independent_draws():
    """Draws are seeded permutations (same seed, same draws); the baseline is their mean."""
    data = demo.load("breast_cancer", 0)
    baseline = demo.Baseline(data, seed=3, draws=4)
    assert demo.Baseline(data, seed=3, draws=4).draws == baseline.draws
    assert demo.Baseline(data, seed=3, draws=2).draws == baseline.draws[:2]
    assert demo.Baseline(data, seed=4, draws=4).draws != baseline.draws
    assert len({tuple(rows[:40]) for rows, _ in baseline.draws}) == 4
    for rows, given in baseline.draws:
        assert sorted(rows) == sorted(int(row) for row in data.pool) and len(given) == len(rows)
    mean, scores = baseline.accuracy(data, 40)
    assert scores == [demo.heldout_accuracy(data, rows[:40], given[:40])
                      for rows, given in baseline.draws]
    assert len(set(scores)) > 1 and mean == pytest.approx(sum(scores) / 4)


def test_a_draw_of_one_class_is_left_out_of_the_baseline():
    """With one label per draw no model can be fit: no scores, so the report shows n/a."""
    data = demo.load("breast_cancer", 0)
    assert demo.Baseline(data, seed=0, draws=3).accuracy(data, 1) == (None, [])


def _exploration(n, versions, accuracy=0.8, mean_n_labels=20.0):
    return {"accuracy": accuracy, "std_error": 0.05, "n": n, "window": 100,
            "versions": versions, "mean_n_labels": mean_n_labels, "basis": "unbiased"}


def test_exploration_points_are_added_only_when_the_estimate_moves():
    """A null estimate adds nothing; the same (n, versions) twice adds one point."""
    curve = demo.Curve()
    curve.add_exploration(None)
    curve.add_exploration({**_exploration(0, []), "accuracy": None})
    curve.add_exploration(_exploration(10, [1]))
    curve.add_exploration(_exploration(10, [1]))
    curve.add_exploration(_exploration(25, [1, 2], 0.76, 31.2))
    assert (curve.explore_labels, curve.explore, curve.explore_error) == (
        [20.0, 31.2], [0.8, 0.76], [0.05, 0.05])


def test_progress_line_shows_the_exploration_estimate_when_there_is_one():
    """The report's exploration part names the estimate unbiased, and is empty without one."""
    assert demo._exploration(_exploration(40, [2])) == (
        ", exploration accuracy 0.800 ± 0.050 unbiased, n 40")
    assert demo._exploration({**_exploration(0, []), "accuracy": None}) == ""


def test_legend_sits_outside_the_axes():
    """With all four curves drawn, the legend's box misses the axes' and fits in the figure."""
    curve = demo.Curve(labels=[10, 20, 30], heldout=[0.7, 0.8, 0.9], random=[0.6, 0.7, 0.8],
                       random_low=[0.5, 0.6, 0.7], random_high=[0.7, 0.8, 0.9], random_draws=10,
                       model_labels=[10, 20], model_cv=[0.9, 0.95])
    curve.add_exploration(_exploration(12, [1], 0.75, 10.0))
    fig = demo.figure(curve, "p")
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    axes = fig.axes[0].get_tightbbox(renderer)
    assert len(fig.legends[0].get_texts()) == 4
    assert not legend.overlaps(axes)
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and fig.bbox.y0 <= legend.y0
