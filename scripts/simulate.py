"""``taskrank simulate DATASET``: replay a labelled dataset through the acquisition strategies.

DATASET is one of scikit-learn's bundled sets (digits, breast_cancer, wine, iris), a pool
generated in memory (classes10, embeddings384; see ``learning/datasets.py``) or a ``.npz``
file holding arrays ``X`` and ``y``. Prints test accuracy at 50/100/200/300
labels and the area under the learning curve (AULC) per strategy, mean ± std over seeds;
optionally writes the JSON result and a PNG of the learning curves.

With ``--experts`` it replays labelling by simulated experts instead (a gold bank, spot
checks, a cost per label) and compares label accuracy, right items per $1,000 and the share
of labels spent on checks under taskrank's routing, random assignment and an oracle;
``--strategy-file`` is then the project's strategy (``routing``, ``qa``, ``retrain``).

With ``--http`` both replays run through a running server (``--url``, ``--token``; default
TASKRANK_URL and TASKRANK_TOKEN, an admin token): the default strategy (or the
``--strategy-file`` one) against the in-process replay of the same seeds, or, with
``--experts``, the taskrank arm routed by the server itself (random and oracle stay in
process); see ``scripts/simulate_http.py``. ``--http --cold`` lets the server pick from
the first label with the project's defaults, and judges it beside random and margin
sampling with a plain LogisticRegression; ``--concurrent N`` has N experts label in
parallel, never waiting for retrains; see ``scripts/simulate_cold.py``.

Exit status: 0 done, 1 the server failed mid-run, 130 interrupted, 2 unusable input
(unknown dataset, missing file, bad strategy file, nonsensical numbers, flags that do not
go together, server unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from taskrank.client import Client, ClientError
from taskrank.learning.priority import Strategy
from taskrank.learning.simulate import (
    BUILTIN_STRATEGIES,
    DATASETS,
    load_dataset,
    run_simulation,
    simulate_routing,
)
from taskrank.queue.running import server_url
from taskrank.queue.settings import Settings, SettingsError

CHECKPOINTS = (50, 100, 200, 300)


class Unusable(Exception):
    """Bad input: exit 2 with this one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise Unusable(message)


def _count(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {number}")
    return number


def _seconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.0 <= number <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected seconds in [0, 3600], got {number}")
    return number


def _share(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {number}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (``Unusable`` on bad input)."""
    parser = _Parser(prog="taskrank simulate", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset",
                        help=f"one of {', '.join(sorted(DATASETS))}, or a .npz with X and y")
    parser.add_argument("--strategies", default=",".join(BUILTIN_STRATEGIES),
                        help="comma-separated strategies (default: all six)")
    parser.add_argument("--strategy-file", type=Path,
                        help="JSON partial strategy, compared as 'candidate'; with --experts "
                             "the project's strategy (routing, qa, retrain)")
    parser.add_argument("--seeds", type=_count, default=5)
    parser.add_argument("--initial", type=_count, default=10, help="labels to start from")
    parser.add_argument("--batch", type=_count, default=10, help="labels per round")
    parser.add_argument("--budget", type=_count, default=300, help="labels at the end")
    parser.add_argument("--test-size", type=_share, default=0.25)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the curves here")
    served = parser.add_argument_group("through a running server (--http)")
    served.add_argument("--http", action="store_true",
                        help="run through the server at --url (ignores --strategies)")
    served.add_argument("--url", help="server (default TASKRANK_URL)")
    served.add_argument("--token", help="admin bearer token (default TASKRANK_TOKEN)")
    served.add_argument("--wait", type=_count, default=120,
                        help="seconds to wait for one retrain (default 120)")
    served.add_argument("--cold", action="store_true",
                        help="the server picks from the first label (project defaults, "
                             "nothing seeded), judged beside random and margin sampling")
    served.add_argument("--concurrent", type=_count, metavar="N",
                        help="with --cold: N experts claim and label in parallel, never "
                             "waiting for retrains, at the project's retrain cadence")
    served.add_argument("--label-seconds", type=_seconds, default=1.0,
                        help="with --concurrent: seconds each expert spends on a task "
                             "before its label (default 1; real experts take minutes; 0: "
                             "instant clients, a stress test the retrains cannot follow)")
    experts = parser.add_argument_group("simulated experts (--experts)")
    experts.add_argument("--experts", action="store_true", help="simulate expert routing")
    experts.add_argument("--n-labels", type=_count, default=1000)
    experts.add_argument("--redundancy", type=_count, default=1,
                         help="labels wanted per item (default 1)")
    experts.add_argument("--n-experts", type=_count, default=8)
    experts.add_argument("--n-domains", type=_count, default=4)
    experts.add_argument("--gold", type=_share, default=0.05,
                         help="gold bank: gold items (answers known) added to the pool, as a "
                              "share of it, served only by taskrank's rule (default 0.05)")
    experts.add_argument("--overclaim", type=_share, default=0.25,
                         help="share of experts who overstate their skills")
    return _check_modes(parser.parse_args(argv))


def _check_modes(args: argparse.Namespace) -> argparse.Namespace:
    """Flags that only make sense together (``Unusable`` otherwise)."""
    if args.cold and not args.http:
        raise Unusable("--cold runs through a server: add --http")
    if args.concurrent is not None and not (args.http and args.cold):
        raise Unusable("--concurrent needs --http --cold")
    if args.cold and args.experts:
        raise Unusable("--cold replays learning curves; it does not combine with --experts")
    return args


def read_dataset(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(X, y, display name) from a bundled dataset name or a .npz path."""
    if name in DATASETS:
        return (*load_dataset(name), name)
    path = Path(name)
    if path.suffix != ".npz":
        raise Unusable(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)} "
                       "or a .npz file with arrays X and y")
    if not path.is_file():
        raise Unusable(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("X", "y") if key not in data.files]
            if missing:
                raise Unusable(f"{path} lacks array {missing[0]!r}; it needs X and y")
            X, y = np.asarray(data["X"], dtype=float), np.asarray(data["y"])
    except (OSError, ValueError) as exc:
        raise Unusable(f"cannot read {path}: {exc}") from None
    if X.ndim != 2 or y.shape != X.shape[:1] or np.unique(y).size < 2:
        raise Unusable(f"{path}: X must be (n, d) and y (n,) with >= 2 classes, "
                       f"got {X.shape} and {y.shape}")
    return X, y, path.stem


def read_strategies(args: argparse.Namespace) -> dict:
    """{name: builtin name or Strategy} from --strategies and --strategy-file."""
    names = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = [name for name in names if name not in BUILTIN_STRATEGIES]
    if unknown:
        raise Unusable(
            f"unknown strategies {unknown}; expected some of {list(BUILTIN_STRATEGIES)}"
        )
    strategies: dict = {name: name for name in names}
    patch = read_strategy_file(args)
    if patch is not None:
        strategies["candidate"] = Strategy.from_dict(patch)
    if not strategies:
        raise Unusable("no strategy to simulate")
    return strategies


def read_strategy_file(args: argparse.Namespace) -> dict | None:
    """The partial strategy of --strategy-file (checked against the defaults), or None."""
    if args.strategy_file is None:
        return None
    try:
        patch = json.loads(args.strategy_file.read_text())
        Strategy.from_dict(patch)
    except OSError as exc:
        raise Unusable(f"cannot read strategy file {args.strategy_file}: {exc.strerror}") from None
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise Unusable(f"bad strategy file {args.strategy_file}: {exc}") from None
    return patch


def _mean_std(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def learning_table(result: dict) -> str:
    """Accuracy at the checkpoints and AULC per strategy, mean ± std over seeds."""
    first = next(iter(result["strategies"].values()))
    counts = np.array(first["n_labels"])
    columns = [c for c in CHECKPOINTS if c <= counts[-1]] or [int(counts[-1])]
    header = ["strategy", *(f"acc@{c}" for c in columns), "AULC"]
    rows = []
    for name, summary in result["strategies"].items():
        curves = np.array(summary["curves"])
        at = np.searchsorted(counts, columns, side="right") - 1  # last count <= checkpoint
        cells = [_mean_std(curves[:, i]) for i in at]
        rows.append([name, *cells, _mean_std(summary["aulc"]["per_seed"])])
    return _format([header, *rows])


ROUTING_COLUMNS = (  # figure, heading, format of its mean and std
    ("accuracy", "label accuracy", "{:.3f}"),
    ("correct_items", "correct items", "{:.1f}"),
    ("cost", "cost (USD)", "{:.0f}"),
    ("correct_per_1000_usd", "right items per $1,000", "{:.1f}"),
    ("overhead_share", "overhead share", "{:.3f}"),
    ("labels", "labels", "{:.0f}"),
)
GAP_NAMES = {"accuracy": "label accuracy", "correct_per_1000_usd": "right items per $1,000"}


def routing_table(result: dict) -> str:
    """Per routing arm, mean ± std over seeds of each figure; then the share of the
    random -> oracle gap taskrank closed, per figure."""
    rows = [["arm", *(heading for _, heading, _ in ROUTING_COLUMNS)]]
    for arm, summary in result["arms"].items():
        rows.append([arm, *(f"{form.format(summary[key]['mean'])} ± "
                            f"{form.format(summary[key]['std'])}" if key in summary else "-"
                            for key, _, form in ROUTING_COLUMNS)])
    lines = [_format(rows)]
    for figure, closed in (result["gap_closed"] or {}).items():
        share = "- (the oracle does not beat random)" if closed is None else f"{closed:.0%}"
        lines.append(f"gap closed by taskrank (random -> oracle), "
                     f"{GAP_NAMES.get(figure, figure)}: {share}")
    return "\n".join(lines)


def _format(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def plot(result: dict, path: Path) -> None:
    """Mean learning curve ± std per strategy (or accuracy per arm) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if "arms" in result:
        arms = list(result["arms"])
        means = [result["arms"][a]["accuracy"]["mean"] for a in arms]
        stds = [result["arms"][a]["accuracy"]["std"] for a in arms]
        ax.bar(arms, means, yerr=stds, capsize=4)
        ax.set_ylabel("aggregated label accuracy")
    else:
        for name, summary in result["strategies"].items():
            x, curves = summary["n_labels"], np.array(summary["curves"])
            mean, std = curves.mean(axis=0), curves.std(axis=0)
            ax.plot(x, mean, label=f"{name} (AULC {summary['aulc']['mean']:.3f})")
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy")
        # Outside the axes, so no curve or band is ever hidden behind it.
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                  borderaxespad=0.0)
    ax.set_title(f"taskrank simulate: {result.get('dataset', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def simulate(args: argparse.Namespace, X: np.ndarray, y: np.ndarray, name: str) -> dict:
    """Run the requested simulation with a progress bar."""
    if args.http:
        return simulate_over_http(args, X, y, name)
    if args.experts:
        with tqdm(total=3 * args.seeds, desc="routing", unit="run", disable=None) as bar:
            result = simulate_routing(X, y, **_routing_settings(args), progress=bar.update)
        return {"dataset": name, **result}
    strategies = read_strategies(args)
    with tqdm(total=len(strategies) * args.seeds, desc="simulate", unit="curve",
              disable=None) as bar:
        return run_simulation(
            X, y, strategies, seeds=args.seeds, initial=args.initial, batch=args.batch,
            budget=args.budget, test_size=args.test_size, random_state=args.random_state,
            dataset=name, progress=bar.update)


def _routing_settings(args: argparse.Namespace) -> dict:
    """The keyword arguments of a routing replay, in process or over HTTP."""
    return {"n_domains": args.n_domains, "n_experts": args.n_experts,
            "n_labels": args.n_labels, "redundancy": args.redundancy, "seeds": args.seeds,
            "gold": args.gold, "overclaim": args.overclaim, "random_state": args.random_state,
            "strategy": read_strategy_file(args)}


def simulate_over_http(args: argparse.Namespace, X: np.ndarray, y: np.ndarray,
                       name: str) -> dict:
    """``--http``: the same replay through the server at ``--url``."""
    from taskrank.scripts import simulate_http

    routing = _routing_settings(args) if args.experts else None  # a bad file: before the server
    client = server_client(args)
    with client:
        if args.experts:
            # Three arms per seed in process, then the taskrank arm through the server.
            with tqdm(total=4 * args.seeds, desc="routing (http)", unit="run",
                      disable=None) as bar:
                return simulate_http.routing(client, X, y, **routing, dataset=name,
                                             wait=args.wait, progress=bar.update)
        candidate = read_strategies(args).get("candidate")
        patch = None if candidate is None else json.loads(args.strategy_file.read_text())
        if args.cold:
            return _cold_over_http(args, client, X, y, name, patch)
        rounds = len(range(args.initial, args.budget, args.batch)) + 1
        with tqdm(total=args.seeds * rounds, desc="simulate (http)", unit="round",
                  disable=None) as bar:
            return simulate_http.learning_curves(
                client, X, y, patch, seeds=args.seeds, initial=args.initial, batch=args.batch,
                budget=args.budget, test_size=args.test_size, random_state=args.random_state,
                dataset=name, wait=args.wait, progress=bar.update)


def _cold_over_http(args: argparse.Namespace, client: Client, X: np.ndarray, y: np.ndarray,
                    name: str, patch: dict | None) -> dict:
    """``--http --cold [--concurrent N]``: the server beside random and margin sampling."""
    from taskrank.scripts.simulate_cold import cold_curves

    with tqdm(total=args.seeds * args.budget, desc="simulate (http, cold)", unit="label",
              disable=None) as bar:
        return cold_curves(
            client, X, y, patch, seeds=args.seeds, initial=args.initial, batch=args.batch,
            budget=args.budget, test_size=args.test_size, random_state=args.random_state,
            dataset=name, concurrent=args.concurrent or 0, wait=args.wait,
            progress=bar.update, label_seconds=args.label_seconds)


def server_client(args: argparse.Namespace) -> Client:
    """A client for ``--url``/``--token`` (else the settings), checked with one request."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise Unusable(str(exc)) from None
    client = Client(args.url or server_url(settings), args.token or settings.token)
    try:
        client.get("/v1/projects")
    except ClientError as exc:
        raise Unusable(str(exc)) from None
    return client


def report(result: dict, args: argparse.Namespace) -> str:
    """The tables for the result of ``simulate``."""
    if not args.http:
        return routing_table(result) if args.experts else learning_table(result)
    if args.cold:
        from taskrank.scripts.simulate_cold import difference_lines

        return f"{learning_table(result)}\n{difference_lines(result)}"
    if args.experts:
        return "\n".join([
            f"taskrank through the server ({result['config']['url']}), random and oracle in "
            "process:", routing_table(result),
            "\nall three arms in process (the same worlds):", routing_table(result["in_process"])])
    c = result["comparison"]
    per_seed = ", ".join(f"{d:+.4f}" for d in c["per_seed_difference"])
    verdict = "within" if c["within_budget"] else "OUTSIDE"
    same = sum(seed["points_equal_to_twin"] for seed in result["seeds_detail"])
    points = sum(len(curve) for curve in c["twin"]["curves"])
    return (f"{learning_table(result)}\nAULC http - in-process: {c['difference']:+.4f} "
            f"(per seed {per_seed}); {verdict} the budget of ±{c['budget']}\n"
            f"in-process twin with the server's ranker seed: AULC {c['twin']['aulc']:.4f}, "
            f"{same} of {points} points equal to the server's")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taskrank simulate``; returns the exit status."""
    try:
        args = parse_args(argv)
        for path in (args.json, args.plot):
            if path is not None and not path.parent.is_dir():
                raise Unusable(f"cannot write {path}: no directory {path.parent}")
        X, y, name = read_dataset(args.dataset)
        started = time.perf_counter()
        try:
            result = simulate(args, X, y, name)
        except ValueError as exc:  # the library validates the numbers before any work
            raise Unusable(str(exc)) from None
    except Unusable as exc:
        print(f"taskrank simulate: error: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"taskrank simulate: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the experts' threads are joined by then
        print("taskrank simulate: interrupted", file=sys.stderr)
        return 130
    result["seconds"] = round(time.perf_counter() - started, 2)
    print(report(result, args))
    print(f"({result['seconds']:.1f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot is not None:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
