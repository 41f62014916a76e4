"""``taskrank demo``: play a labeling platform against a running server, end to end.

Creates a project from a scikit-learn dataset, declares three simulated experts whose
accuracy depends on the item's skill tag, ingests the pool (a test split is held out),
then leases and labels tasks as those experts would.  Every ``--every`` labels it prints
the server's model version and cross-validated accuracy, the held-out accuracy of a
model fit on the labels gathered so far (next to the same for random items labeled by a
random expert, averaged over seeded draws) and how the top of the queue moved; at the end
a PNG learning curve.  The project runs the product's default strategy.

Items carry standardised features and the predictions of a deliberately weak supplied
model (naive Bayes on two features, fit on a small seed split that is neither pool nor
test): that is what a labeling platform has, so the queue is meaningful from the first
task, and the server's own ranking model has something to improve on.

The curves of the plot (also printed at the end):

- taskrank (held out): a plain logistic regression fit on the items taskrank chose, with
  the labels its routed experts gave, scored on the held-out test split.  Unbiased for
  the demo, which knows the truth; a real platform has no such split.
- random (held out): the same for random items, each labeled by a random expert: the
  baseline taskrank must beat.  One random draw is a noisy yardstick (which items, which
  expert, which mistakes), so this is the mean over ``--random-draws`` seeded draws (10 by
  default), with their range shaded; its own random numbers, so it does not move when
  the experts' answers to taskrank's tasks do.
- server, exploration (unbiased): what a real deployment can know.  The server's own model
  versions scored on exploration items (drawn uniformly from the pending pool, whatever
  the model thinks) labeled after those versions were trained; points at the labels those
  versions were trained on, bars one standard error.  It is measured against the experts'
  labels, so their mistakes count against the model and it sits below the held-out curves.
- server, cross-validated (biased): cross-validation on the labels the model itself
  picked; the selection bias makes it optimistic or pessimistic, so it is drawn dotted.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from taskrank.client import Client, ClientError
from taskrank.queue.settings import Settings, SettingsError
from taskrank.scripts.cli import add_server_arguments

DATASETS = {"breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits,
            "wine": datasets.load_wine, "iris": datasets.load_iris}
LEVELS = ("low", "mid", "high")
# True accuracy per skill tag (by tertile of the first feature); declared levels match.
EXPERTS = {"generalist": (0.85, 0.85, 0.85), "low-specialist": (0.97, 0.80, 0.62),
           "high-specialist": (0.62, 0.80, 0.97)}
TEST_SHARE, SEED_ITEMS = 0.25, 40
RANDOM_DRAWS = 10


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskrank demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(parser, settings)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="breast_cancer")
    parser.add_argument("--labels", type=int, default=200, help="labels to give (default 200)")
    parser.add_argument("--every", type=int, default=25,
                        help="report every N labels (default 25); the server retrains at "
                             "its own default cadence")
    parser.add_argument("--plot", default="demo.png", help="learning curve PNG (default demo.png)")
    parser.add_argument("--wait", type=float, default=2.0,
                        help="seconds to wait at a report for a due retrain to land (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-draws", type=int, default=RANDOM_DRAWS,
                        help="seeded draws the random baseline is averaged over "
                             f"(default {RANDOM_DRAWS})")
    return parser.parse_args(argv)


@dataclass
class Data:
    """The dataset split three ways, with skill tags and the weak model's predictions."""

    labels: list[str]
    feature: str
    X: np.ndarray  # standardised features
    y: np.ndarray
    tags: np.ndarray  # tag index per row (0, 1, 2)
    pool: np.ndarray
    test: np.ndarray
    weak: np.ndarray  # (n, k) probabilities of the weak supplied model


def load(name: str, seed: int) -> Data:
    bunch = DATASETS[name]()
    X = StandardScaler().fit_transform(bunch.data)
    y = np.asarray(bunch.target)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(len(y) * TEST_SHARE)
    seed_rows, test, pool = order[:SEED_ITEMS], order[SEED_ITEMS:SEED_ITEMS + n_test], \
        order[SEED_ITEMS + n_test:]
    weak = GaussianNB().fit(X[seed_rows][:, :2], y[seed_rows]).predict_proba(X[:, :2])
    weak = np.clip(weak, 1e-3, None)
    tags = np.searchsorted(np.quantile(X[:, 0], [1 / 3, 2 / 3]), X[:, 0])
    feature = bunch.feature_names[0] if hasattr(bunch, "feature_names") else "feature 0"
    return Data([str(name) for name in bunch.target_names], str(feature), X, y, tags, pool,
                test, weak / weak.sum(axis=1, keepdims=True))


def tag_names(data: Data) -> list[str]:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", data.feature).strip("-").lower()[:40] or "feature"
    return [f"{slug}-{level}" for level in LEVELS]


def item(data: Data, row: int, tags: list[str]) -> dict:
    probs = [round(float(p), 6) for p in data.weak[row]]
    probs[-1] = round(1.0 - sum(probs[:-1]), 6)
    return {"id": f"row-{row}", "features": [round(float(x), 5) for x in data.X[row]],
            "predictions": {"weak-nb": probs}, "skills": [tags[data.tags[row]]],
            "payload": {"row": int(row)}}


@dataclass
class Curve:
    """What the demo measured at each report."""

    labels: list[int] = field(default_factory=list)
    heldout: list[float] = field(default_factory=list)
    random: list[float] = field(default_factory=list)  # mean over the random draws
    random_low: list[float] = field(default_factory=list)  # their range
    random_high: list[float] = field(default_factory=list)
    random_draws: int = 0
    model_labels: list[int] = field(default_factory=list)
    model_cv: list[float] = field(default_factory=list)
    explore_labels: list[float] = field(default_factory=list)  # mean labels trained on
    explore: list[float] = field(default_factory=list)
    explore_error: list[float] = field(default_factory=list)
    explore_seen: tuple = ()  # (n, versions) of the last point, to skip repeats

    def add_exploration(self, explored: dict | None) -> None:
        """A point of the server's unbiased estimate, when it moved since the last one."""
        if not explored or explored.get("accuracy") is None:
            return
        seen = (explored["n"], tuple(explored["versions"]))
        if seen == self.explore_seen or explored.get("mean_n_labels") is None:
            return
        self.explore_seen = seen
        self.explore_labels.append(explored["mean_n_labels"])
        self.explore.append(explored["accuracy"])
        self.explore_error.append(explored["std_error"])


def heldout_accuracy(data: Data, rows: list[int], given: list[int]) -> float | None:
    """Accuracy on the test split of a model fit on ``rows`` with the labels ``given``."""
    if len(set(given)) < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(data.X[rows], given)
    return float(model.score(data.X[data.test], data.y[data.test]))


def answer(data: Data, row: int, accuracy: float, rng: np.random.Generator) -> int:
    """The simulated expert's label: right with probability ``accuracy``."""
    truth = int(data.y[row])
    if rng.random() < accuracy:
        return truth
    return int(rng.choice([c for c in range(len(data.labels)) if c != truth]))


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"taskrank demo: {error}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings)
    if min(args.labels, args.every, args.random_draws) < 1:
        print("taskrank demo: --labels, --every and --random-draws must be >= 1",
              file=sys.stderr)
        return 2
    client = Client(args.url, args.token)
    try:
        pid, cadence, experts, data = setup(client, args)
    except ClientError as error:
        print(f"taskrank demo: {error}", file=sys.stderr)
        return 2
    try:
        curve = play(client, args, pid, cadence, experts, data)
    except ClientError as error:
        print(f"taskrank demo: stopped: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    plot(curve, args.plot, pid)
    print(f"learning curve written to {args.plot}")
    print(explain_curves(args.random_draws))
    return 0


def setup(client: Client, args: argparse.Namespace) -> tuple[str, int, dict, Data]:
    """Project (and its retrain cadence), experts and items on the server."""
    data = load(args.dataset, args.seed)
    tags = tag_names(data)
    pid = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.default_rng().integers(1_000_000):06d}"
    # The product's default strategy, as a platform starting a project would run it: the
    # retrain cadence is the strategy's (measured in learning.priority.Retrain), not tied
    # to how often this demo prints.
    project = client.post("/v1/projects", {"id": pid, "labels": data.labels})
    cadence = int(project["strategy"]["retrain"]["every_labels"])
    experts = {}
    for name, accuracy in EXPERTS.items():
        eid = f"{pid}.{name}"
        client.put(f"/v1/experts/{eid}", {"skills": dict(zip(tags, accuracy, strict=True)),
                                          "capacity": 2, "cost_per_hour": 200})
        experts[eid] = accuracy
    for start in range(0, len(data.pool), 500):
        rows = data.pool[start:start + 500]
        client.post(f"/v1/projects/{pid}/items", {"items": [item(data, r, tags) for r in rows]})
    print(f"project {pid}: {args.dataset}, labels {data.labels}, {len(data.pool)} items in the "
          f"pool, {len(data.test)} held out; skills: tertiles of {data.feature!r} {tags}")
    for eid, accuracy in experts.items():
        print(f"  expert {eid}: true accuracy per skill {dict(zip(tags, accuracy, strict=True))}")
    return pid, cadence, experts, data


def play(client: Client, args: argparse.Namespace, pid: str, cadence: int, experts: dict,
         data: Data) -> Curve:
    """Lease and label ``--labels`` tasks round-robin over the experts, reporting as we go."""
    rng = np.random.default_rng(args.seed + 1)
    baseline = Baseline(data, args.seed, args.random_draws)
    rows, given, correct = [], [], 0
    curve, top = Curve(random_draws=args.random_draws), []
    names, turn, idle = list(experts), 0, 0
    while len(rows) < args.labels and idle < len(names):
        eid = names[turn % len(names)]
        turn += 1
        task = client.post(f"/v1/projects/{pid}/tasks/next", {"expert_id": eid})
        if task is None:  # 204: nothing eligible for this expert
            idle += 1
            continue
        idle = 0
        row = int(task["task"]["payload"]["row"])
        label = answer(data, row, experts[eid][data.tags[row]], rng)
        client.post(f"/v1/tasks/{task['task']['id']}/label",
                    {"label": data.labels[label], "seconds_spent": float(rng.uniform(30, 180))})
        rows.append(row)
        given.append(label)
        correct += int(label == data.y[row])
        if len(rows) % args.every == 0 or len(rows) == args.labels:
            top = report(client, args, (pid, cadence), data, rows, given, baseline, curve, top)
    print(f"done: {len(rows)} labels, {correct / max(len(rows), 1):.1%} of them right "
          f"(the experts' answers against the truth)")
    return curve


class Baseline:
    """What a platform without taskrank gets: random items, each to a random expert.

    ``draws`` independent draws, draw i seeded by ``(seed, i)``: the same for every run of
    one ``--seed``, and apart from the generator of the experts' answers to taskrank.
    """

    def __init__(self, data: Data, seed: int, draws: int = RANDOM_DRAWS) -> None:
        accuracy = list(EXPERTS.values())
        self.draws = []
        for draw in range(draws):
            rng = np.random.default_rng([seed, draw])
            rows = [int(row) for row in rng.permutation(data.pool)]
            given = [answer(data, row, accuracy[rng.integers(len(accuracy))][data.tags[row]],
                            rng) for row in rows]
            self.draws.append((rows, given))

    def accuracy(self, data: Data, n: int) -> tuple[float | None, list[float]]:
        """Mean held-out accuracy after ``n`` labels, and each draw's (one-class draws left
        out: no model to score; they would score low, so leaving them out flatters random)."""
        scores = (heldout_accuracy(data, rows[:n], given[:n]) for rows, given in self.draws)
        kept = [score for score in scores if score is not None]
        return (float(np.mean(kept)) if kept else None), kept


def report(client: Client, args: argparse.Namespace, project: tuple[str, int], data: Data,
           rows: list[int], given: list[int], baseline: Baseline, curve: Curve,
           previous_top: list[str]) -> list[str]:
    """Print one line of progress, add a point to the curve; the queue's top ids."""
    pid, cadence = project
    model = wait_for_model(client, pid, len(rows) - cadence + 1, args.wait)
    ours, (theirs, draws) = heldout_accuracy(data, rows, given), baseline.accuracy(data, len(rows))
    queue = client.get(f"/v1/projects/{pid}/queue?limit=10")["items"]
    top = [entry["id"] for entry in queue]
    curve.labels.append(len(rows))
    curve.heldout.append(np.nan if ours is None else ours)
    curve.random.append(np.nan if theirs is None else theirs)
    curve.random_low.append(min(draws, default=np.nan))
    curve.random_high.append(max(draws, default=np.nan))
    cv = (model.get("metrics") or {}).get("accuracy")
    if cv is not None:
        curve.model_labels.append(model["n_labels"])
        curve.model_cv.append(cv)
    curve.add_exploration(model.get("exploration"))
    version = _model_line(model, cv)
    first = ""
    if queue:
        terms = ", ".join(f"{name} {term['value']:.2f}"
                          for name, term in queue[0]["breakdown"].items() if term["value"])
        first = f"; #1 {queue[0]['id']} priority {queue[0]['priority']:.3f} ({terms})"
    moved = len(set(top) - set(previous_top))
    print(f"labels {len(rows):4d} | {version} | held-out accuracy {_fmt(ours)} (random items, "
          f"random expert, mean of {len(draws)} draws: {_fmt(theirs)}) | top-10 queue: "
          f"{moved} new{first}", flush=True)
    return top


def wait_for_model(client: Client, pid: str, n_labels: int, seconds: float) -> dict:
    """The model, once trained on ``n_labels`` labels or more and cross-validated (its
    evaluation runs after the re-score), or as it is after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        model = client.get(f"/v1/projects/{pid}/model")
        done = model.get("n_labels", 0) >= n_labels and model.get("metrics")
        if done or time.monotonic() >= deadline:
            return model
        time.sleep(0.1)


def _model_line(model: dict, cv: float | None) -> str:
    """The server's model for the progress line; its evaluation may still be queued."""
    if model.get("version") is None:
        return "no model yet"
    quality = "cv pending" if cv is None else f"cv accuracy {cv:.3f} biased"
    return (f"model v{model['version']} (on {model['n_labels']} labels, {quality}"
            f"{_exploration(model.get('exploration'))})")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _exploration(explored: dict | None) -> str:
    """The server's unbiased estimate for the progress line, when it has one."""
    if not explored or explored.get("accuracy") is None:
        return ""
    return (f", exploration accuracy {explored['accuracy']:.3f} ± "
            f"{explored['std_error']:.3f} unbiased, n {explored['n']}")


def explain_curves(draws: int) -> str:
    """What each curve of the plot measures, printed at the end of a run."""
    return CURVES_EXPLAINED.format(draws=draws)


CURVES_EXPLAINED = """how to read the plot:
  taskrank (held out)          logistic regression on the items taskrank chose and the
                               labels its experts gave, scored on the held-out split
  random (held out)            the same for random items and random experts: the baseline,
                               the mean of {draws} seeded draws (shaded: their range)
  server, exploration          UNBIASED: the server's model versions scored on exploration
                               items (uniform from the pool) labeled after they were
                               trained, ± one standard error; against the experts' labels,
                               so their mistakes count against it
  server, cross-validated      BIASED: cross-validation on labels the model itself picked"""


def plot(curve: Curve, path: str, pid: str) -> None:
    """Write the learning curves to ``path`` (PNG)."""
    figure(curve, pid).savefig(path, dpi=110)


def figure(curve: Curve, pid: str) -> object:
    """The learning curves as a matplotlib Figure (not pyplot: no global state to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(curve.labels, curve.heldout, "o-", color="tab:blue",
            label="taskrank order and routing (held out)")
    draws = f"mean of {curve.random_draws} draws, " if curve.random_draws else ""
    ax.plot(curve.labels, curve.random, "s--", color="tab:orange",
            label=f"random items, random expert ({draws}range shaded; held out)")
    if curve.random_low:
        ax.fill_between(curve.labels, curve.random_low, curve.random_high, color="tab:orange",
                        alpha=0.15, linewidth=0)
    if curve.explore:
        ax.errorbar(curve.explore_labels, curve.explore, yerr=curve.explore_error, fmt="D",
                    color="tab:green", capsize=3,
                    label="server model, exploration labels ± s.e. (unbiased)")
    if curve.model_labels:
        ax.plot(curve.model_labels, curve.model_cv, "^:", color="tab:red", alpha=0.6,
                label="server model, cross-validated (biased by selection)")
    ax.set_xlabel("labels given (the server's points: labels its model was trained on)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"taskrank demo: {pid}")
    ax.grid(alpha=0.3)
    # Below the axes, so it never hides a point; one column, so no label is cut at the edges.
    fig.legend(loc="lower center", ncol=1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


if __name__ == "__main__":
    sys.exit(main())
