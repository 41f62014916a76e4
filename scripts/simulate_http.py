"""``taskrank simulate --http``: the replays of ``taskrank simulate``, through a running server.

Learning curves: per seed, a project whose items are the pool's train split (features, no
predictions), one expert who answers with the truth, and a strategy that retrains once per
batch (``retrain.every_labels = batch``, ``min_labels = initial``).  The seed's random
initial items are ingested with a ``boost`` so ``tasks/next`` hands out the same first labels
as the in-process replay.  Each round waits for the model trained on every label so far and
for the queue re-scored by it, measures held-out accuracy client-side (the same
``TaskRanker`` fitted on the labels exported from the server, as the in-process replay
measures it) and takes the next batch from ``tasks/next``.  The in-process replay of the same
strategy on the same seeds runs beside it, so the two AULCs compare the server's selection
with the library's.  The server fits its ranker with ``random_state=0`` where the replay uses
the seed, so the two draw different bootstrap committees; a twin replay in process with the
server's settings must match the server point for point, which tells a server fault from
committee-seed noise.

Routing (``--experts``): the worlds of ``simulate_routing``, seed for seed.  Items carry one
flat supplied prediction, their skill-domain tag and the world's priority as ``boost`` (so
every arm and the in-process replay rank items alike); experts declare their skills, answer
with their true per-domain accuracy and ask ``tasks/next`` in the replay's seeded random
order.  Arms: ``taskrank`` (the default routing), ``random`` (``fit_exponent`` 0: the asker
gets the top eligible item), ``oracle`` (declared skills = true accuracies).  The server
learns each expert's accuracy per skill from agreement as items finish; accuracy is that of
its aggregated labels after one final retrain (which re-aggregates every item by
Dawid-Skene), the only retrain of the run.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from taskrank.client import ApiError, Client, ClientError
from taskrank.learning.aggregation import ACCURACY_BOUNDS
from taskrank.learning.priority import Strategy, score
from taskrank.learning.ranker import TaskRanker
from taskrank.learning.simulate import (
    ROUTING_ARMS,
    arm_summary,
    gap_closed,
    run_simulation,
    simulate_routing,
)
from taskrank.learning.simulate import _make_world as make_world  # the replay's own worlds

AULC_BUDGET = 0.005  # issue 5: |AULC over HTTP - AULC in process| on the same seeds
# How the server fits its ranker (queue/retrain.py): random_state 0, and each label weighted by
# its aggregated confidence: for one label from an expert declared at level 1, the upper
# accuracy bound (both its level and its vote are clipped there).
SERVER_RANKER_SEED, SERVER_LABEL_WEIGHT = 0, ACCURACY_BOUNDS[1]
BOOST = 10.0  # lifts the initial items above any cold-start priority (density is in [0, 1])
POLL_SECONDS = 0.05
INGEST_BATCH = 1000
EXPORT_PAGE = 10_000
Progress = Callable[[int], object] | None


def _seed_list(random_state: int, seeds: int) -> np.ndarray:
    """The seeds ``run_simulation`` and ``simulate_routing`` draw from ``random_state``."""
    return check_random_state(random_state).randint(np.iinfo(np.int32).max, size=seeds)


def _new_pid(kind: str, dataset: str, seed_index: int, arm: str = "") -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", dataset)[:40]
    return f"sim-{kind}-{name}-s{seed_index}{arm}-{secrets.token_hex(3)}"


def _ingest(client: Client, pid: str, items: list[dict]) -> None:
    for start in range(0, len(items), INGEST_BATCH):
        answer = client.post(f"/v1/projects/{pid}/items",
                             {"items": items[start:start + INGEST_BATCH]})
        if answer["rejected"]:
            raise ClientError(f"the server rejected items: {answer['rejected'][:3]}")


def _export(client: Client, pid: str, aggregated: bool = False) -> list[dict]:
    """Every counted label (or every aggregated label) of a project, all pages."""
    records, cursor = [], ""
    while cursor is not None:
        page = client.get(f"/v1/projects/{pid}/labels?limit={EXPORT_PAGE}&cursor={cursor}"
                          f"{'&aggregated=true' if aggregated else ''}")
        records += [r for r in page["labels"] if aggregated or r["counted"]]
        cursor = page["next_cursor"]
    return records


def _wait(what: str, timeout: float, check: Callable[[], object]) -> object:
    """Poll ``check`` until it answers something truthy; ClientError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        if time.monotonic() > deadline:
            raise ClientError(f"waited {timeout:.0f} s for {what}; is a worker running "
                              "('taskrank worker', or 'taskrank serve' starts one)?")
        time.sleep(POLL_SECONDS)
    return answer


def _fresh_queue(client: Client, pid: str, n_labels: int) -> int | None:
    """The model version once it has every label and the queue is re-scored with it (its
    re-score run finished: the queue view's breakdowns always show the current model)."""
    model = client.get(f"/v1/projects/{pid}/model")
    if model["version"] is None or model["n_labels"] < n_labels or not model.get(
            "rescore_job_id"):
        return None
    try:
        run = client.get(f"/v1/jobs/{model['rescore_job_id']}")
    except ApiError as error:
        if error.status == 404:  # stored with the version a moment before it starts
            return None
        raise
    return model["version"] if run["status"] == "finished" else None


# --- learning curves --------------------------------------------------------------------
def learning_curves(client: Client, X: np.ndarray, y: np.ndarray, patch: dict | None,
                    seeds: int, initial: int, batch: int, budget: int, test_size: float,
                    random_state: int, dataset: str, wait: float = 120.0,
                    progress: Progress = None) -> dict:
    """Learning curves over HTTP and in process for one strategy (``patch`` onto the
    defaults, None for ``default``), same seeds; ``{"strategies", "comparison", ...}``."""
    if initial < batch:
        raise ValueError(f"--http needs initial >= batch (got {initial} < {batch}): the server "
                         "retrains every `batch` labels, so the first retrain must come at "
                         "`initial`")
    spec = "default" if patch is None else Strategy.from_dict(patch)
    local = run_simulation(X, y, {"default": spec}, seeds=seeds, initial=initial, batch=batch,
                           budget=budget, test_size=test_size, random_state=random_state,
                           dataset=dataset)["strategies"]["default"]
    counts = np.array(local["n_labels"])
    # The twin replays the library's scoring; the claim's own exploration and diversity
    # (which no in-process replay reproduces) are off here, and measured by --cold.
    served = {"explore": {"share": 0.0}, "diversity": {"factor": 1.0}, **(patch or {}),
              "retrain": {"every_labels": batch, "min_labels": initial}}
    curves, twins, notes = [], [], []
    for index, seed in enumerate(_seed_list(random_state, seeds)):
        run = _SeedRun(client, np.asarray(X, dtype=float), y, int(seed), test_size, spec, wait)
        curve, note = run.replay(_new_pid("al", dataset, index), served, counts, progress)
        twins.append(run.twin_curve(counts))
        notes.append({**note, "points_equal_to_twin": int(np.sum(
            np.isclose(curve, twins[-1], rtol=0, atol=1e-12)))})
        curves.append(curve)
    http = {**local, "curves": curves, "aulc": _aulc(curves)}
    twin = {**local, "curves": twins, "aulc": _aulc(twins)}
    return {"dataset": dataset, "strategies": {"http": http, "in-process": local},
            "comparison": {**_comparison(http, local),
                           "twin": {"aulc": twin["aulc"]["mean"], "curves": twins}},
            "seeds_detail": notes,
            "config": {"seeds": seeds, "initial": int(counts[0]), "batch": batch,
                       "budget": int(counts[-1]), "test_size": test_size,
                       "strategy": served, "url": client.url}}


def _aulc(curves: list[list[float]]) -> dict:
    aulc = np.mean(curves, axis=1)
    return {"mean": float(aulc.mean()), "std": float(aulc.std()), "per_seed": aulc.tolist()}


def _comparison(http: dict, local: dict) -> dict:
    diff = np.array(http["aulc"]["per_seed"]) - np.array(local["aulc"]["per_seed"])
    mean_diff = http["aulc"]["mean"] - local["aulc"]["mean"]
    return {"aulc_http": http["aulc"]["mean"], "aulc_in_process": local["aulc"]["mean"],
            "difference": mean_diff, "per_seed_difference": diff.tolist(),
            "budget": AULC_BUDGET, "within_budget": bool(abs(mean_diff) <= AULC_BUDGET)}


class _SeedRun:
    """One seed of the learning-curve replay against the server."""

    def __init__(self, client: Client, X, y, seed: int, test_size: float, spec, wait: float):
        self.client, self.seed, self.spec, self.wait = client, seed, spec, wait
        self.X_pool, self.X_test, self.y_pool, self.y_test = train_test_split(
            X, y, test_size=test_size, stratify=y, random_state=seed)
        self.classes = np.unique(y)
        self.by_name = {str(c): c for c in self.classes}

    def replay(self, pid: str, strategy: dict, counts: np.ndarray,
               progress: Progress) -> tuple[list[float], dict]:
        start = check_random_state(self.seed).choice(self.X_pool.shape[0], counts[0],
                                                     replace=False)
        eid = self._setup(pid, strategy, set(start.tolist()))
        first = self._take(pid, eid, int(counts[0]))
        curve, started = [], time.perf_counter()
        for now, after in zip(counts, [*counts[1:], None], strict=True):  # loop over rounds
            labelled, given = self._labels(pid)
            if after is not None and np.unique(given).size >= 2:  # else the server skips
                _wait(f"model on {now} labels and its re-scored queue", self.wait,
                      lambda now=now: _fresh_queue(self.client, pid, int(now)))
            curve.append(self._accuracy(labelled, given))
            if after is not None:
                self._take(pid, eid, int(after - now))
            if progress is not None:
                progress(1)
        self.client.put(f"/v1/experts/{eid}", {"active": False})
        return curve, {"project": pid, "seed": self.seed, "seconds": round(
            time.perf_counter() - started, 1), "initial_items_as_in_process": len(
            set(first) & set(start.tolist()))}

    def twin_curve(self, counts: np.ndarray) -> list[float]:
        """The in-process replay with the server's ranker settings (seed, weights, row order
        by item id): what the server must reproduce point for point."""
        labelled = np.zeros(self.X_pool.shape[0], dtype=bool)
        labelled[check_random_state(self.seed).choice(labelled.size, counts[0], False)] = True
        strategy = Strategy() if self.spec == "default" else self.spec
        curve = []
        for now, after in zip(counts, [*counts[1:], None], strict=True):  # loop over rounds
            rows = np.flatnonzero(labelled)
            curve.append(self._accuracy(rows, self.y_pool[rows]))
            if after is None:
                break
            rest = np.flatnonzero(~labelled)
            if np.unique(self.y_pool[rows]).size < 2:  # the server keeps its cold-start
                labelled[rest[: after - now]] = True  # order: not replayed, see the notes
                continue
            ranker = TaskRanker(model=strategy.committee.model, random_state=SERVER_RANKER_SEED,
                                members=strategy.committee.members, classes=self.classes)
            with threadpool_limits(limits=1, user_api="blas"):
                ranker.fit(self.X_pool[rows], self.y_pool[rows],
                           sample_weight=np.full(rows.size, SERVER_LABEL_WEIGHT))
                features = self.X_pool[rest] if strategy.weights.density > 0 else None
                priority = score(ranker.committee_proba(self.X_pool[rest]), features=features,
                                 strategy=strategy,
                                 estimates=ranker.predict_proba(self.X_pool[rest])[None]).priority
            labelled[rest[np.argsort(-priority, kind="stable")[: after - now]]] = True
        return curve

    def _setup(self, pid: str, strategy: dict, start: set[int]) -> str:
        self.client.post("/v1/projects", {"id": pid, "labels": list(self.by_name),
                                          "strategy": strategy})
        eid = f"{pid}.truth"
        # Declared level 1 (clipped to 0.99): the aggregated label's weight, so the server
        # fits its ranker with near-unit sample weights, as the in-process replay does.
        self.client.put(f"/v1/experts/{eid}", {"skills": {"truth": 1.0}, "capacity": 1})
        # Zero-padded ids: the server trains on labeled items in id order, so its rows come
        # in pool order, as in process (the order moves the committee's bootstrap).
        _ingest(self.client, pid, [
            {"id": f"i{row:06d}", "features": self.X_pool[row].tolist(),
             "boost": BOOST if row in start else 0.0} for row in range(self.X_pool.shape[0])])
        return eid

    def _take(self, pid: str, eid: str, n: int) -> list[int]:
        """Lease and label ``n`` tasks with the true label; the pool rows labelled."""
        rows = []
        for _ in range(n):
            task = self.client.post(f"/v1/projects/{pid}/tasks/next", {"expert_id": eid})
            if task is None:
                raise ClientError(f"tasks/next answered 204 after {len(rows)} of {n} tasks")
            row = int(task["task"]["item_id"][1:])
            self.client.post(f"/v1/tasks/{task['task']['id']}/label",
                             {"label": str(self.y_pool[row]), "seconds_spent": 1})
            rows.append(row)
        return rows

    def _labels(self, pid: str) -> tuple[np.ndarray, np.ndarray]:
        """Pool rows the server holds labels for (ascending, like the in-process mask)."""
        pairs = sorted((int(r["item_id"][1:]), self.by_name[r["label"]])
                       for r in _export(self.client, pid))
        rows = np.array([row for row, _ in pairs], dtype=np.intp)
        return rows, np.array([label for _, label in pairs])

    def _accuracy(self, rows: np.ndarray, given: np.ndarray) -> float:
        """Held-out accuracy of the in-process replay's ranker fitted on these labels."""
        committee = (Strategy() if self.spec == "default" else self.spec).committee
        ranker = TaskRanker(model=committee.model, members=committee.members,
                            classes=self.classes, random_state=self.seed)
        with threadpool_limits(limits=1, user_api="blas"):
            ranker.fit(self.X_pool[rows], given)
            return float(ranker.score(self.X_test, self.y_test))


# --- routing ------------------------------------------------------------------------------
def routing(client: Client, X: np.ndarray, y: np.ndarray, n_domains: int, n_experts: int,
            n_labels: int, redundancy: int, seeds: int, gold: float, overclaim: float,
            random_state: int, dataset: str, wait: float = 120.0,
            progress: Progress = None) -> dict:
    """The three routing arms through the server, next to the in-process replay."""
    shared = dict(n_domains=n_domains, n_experts=n_experts, n_labels=n_labels,
                  redundancy=redundancy, seeds=seeds, gold=gold, overclaim=overclaim,
                  random_state=random_state)
    library = simulate_routing(X, y, **shared)
    # As the server routes by default: soft agreement credit, no hold-back (holdback_seconds 0).
    as_served = simulate_routing(X, y, hold_back_margin=None, agreement="soft", **shared)
    config = library["config"]
    results = {arm: {"accuracy": [], "cost": [], "labels": [], "seconds": []}
               for arm in ROUTING_ARMS}
    for index, seed in enumerate(_seed_list(random_state, seeds)):
        world = make_world(np.asarray(X, dtype=float), np.asarray(y), config["pool"],
                           n_domains, n_experts, gold, overclaim, seed)
        for arm in ROUTING_ARMS:  # loop over arms; the same request order for each
            pid = _new_pid("route", dataset, index, f"-{arm}")
            outcome = _RoutingRun(client, world, pid, wait).run(
                arm, redundancy, config["capacity"], n_labels, int(seed))
            for key, number in outcome.items():
                results[arm][key].append(number)
            if progress is not None:
                progress(1)
    arms = {arm: arm_summary(r) for arm, r in results.items()}
    return {"dataset": dataset, "config": {**config, "url": client.url}, "arms": arms,
            "gap_closed": gap_closed(arms),
            "in_process": {"library_defaults": _strip(library),
                           "as_the_server_routes": _strip(as_served)}}


def _strip(result: dict) -> dict:
    return {"arms": result["arms"], "gap_closed": result["gap_closed"]}


class _RoutingRun:
    """One arm of one seed: a project, its experts, the asking loop, the final labels."""

    def __init__(self, client: Client, world, pid: str, wait: float) -> None:
        self.client, self.world, self.pid, self.wait = client, world, pid, wait
        self.names = [str(c) for c in range(world.n_classes)]
        self.tags = [f"{pid}-d{d}" for d in range(world.true_acc.shape[1])]
        self.eids = [f"{pid}.e{e}" for e in range(world.true_acc.shape[0])]

    def run(self, arm: str, redundancy: int, capacity: int, n_labels: int, seed: int) -> dict:
        started = time.perf_counter()
        self._setup(arm, redundancy, n_labels)
        given = self._ask(n_labels, capacity, check_random_state(seed))
        accuracy = self._final_accuracy()
        for eid in self.eids:  # retired, so they never count as someone's better expert
            self.client.put(f"/v1/experts/{eid}", {"active": False})
        cost = float(sum(self._label_dollars(item, e) for item, e in given))
        return {"accuracy": accuracy, "cost": cost, "labels": len(given),
                "seconds": time.perf_counter() - started}

    def _label_seconds(self, item: int, e: int) -> float:
        return float(self.world.seconds[e, self.world.domain[item]])

    def _label_dollars(self, item: int, e: int) -> float:
        return float(self.world.rate[e]) * self._label_seconds(item, e) / 3600.0

    def _setup(self, arm: str, redundancy: int, n_labels: int) -> None:
        w = self.world
        # No retrain before the final one: with flat predictions a retrain cannot reorder
        # the queue, and one still running could overwrite the final aggregation.
        strategy = {"retrain": {"every_labels": n_labels + 1}}
        if arm == "random":
            strategy["routing"] = {"fit_exponent": 0.0}
        self.client.post("/v1/projects", {"id": self.pid, "labels": self.names,
                                          "redundancy": redundancy, "strategy": strategy})
        levels = w.true_acc if arm == "oracle" else w.declared
        for e, eid in enumerate(self.eids):
            self.client.put(f"/v1/experts/{eid}", {
                "skills": {tag: float(level) for tag, level in zip(self.tags, levels[e],
                                                                    strict=True)},
                "capacity": 1, "cost_per_hour": float(w.rate[e])})
        flat = [1.0 / w.n_classes] * w.n_classes  # ranks nothing: the boost orders the queue
        _ingest(self.client, self.pid, [
            {"id": f"i{n}", "predictions": {"flat": flat}, "skills": [self.tags[w.domain[n]]],
             "boost": float(w.priority[n]), **({"gold": self.names[w.truth[n]]}
                                               if w.gold[n] else {})}
            for n in range(w.truth.shape[0])])

    def _ask(self, n_labels: int, capacity: int, rng) -> list[tuple[int, int]]:
        """Experts ask in random order until ``n_labels`` labels or nobody gets a task."""
        given, done, refused = [], np.zeros(len(self.eids), dtype=int), set()
        while len(given) < n_labels and len(refused) < len(self.eids):  # loop over requests
            e = int(rng.randint(len(self.eids)))
            if e in refused:
                continue
            task = None if done[e] >= capacity else self.client.post(
                f"/v1/projects/{self.pid}/tasks/next", {"expert_id": self.eids[e]})
            if task is None:  # eligibility only shrinks: this expert is done
                refused.add(e)
                continue
            item = int(task["task"]["item_id"][1:])
            self.client.post(f"/v1/tasks/{task['task']['id']}/label",
                             {"label": self.names[self.world.answers[e, item]],
                              "seconds_spent": round(self._label_seconds(item, e), 1)})
            given.append((item, e))
            done[e] += 1
        return given

    def _final_accuracy(self) -> float:
        """Accuracy of the server's aggregated labels on finished non-gold items, after a
        retrain re-aggregated every item (Dawid-Skene over all labels)."""
        job = self.client.post(f"/v1/projects/{self.pid}/retrain")["job_id"]
        status = _wait("the final retrain", self.wait, lambda: {"finished", "failed"} & {
            self.client.get(f"/v1/jobs/{job}")["status"]})
        if "failed" in status:  # its Dawid-Skene step may not have run
            raise ClientError(f"the final retrain of {self.pid} failed: see GET /v1/jobs/{job}")
        w = self.world
        hits = [r["label"] == self.names[w.truth[int(r["item_id"][1:])]]
                for r in _export(self.client, self.pid, aggregated=True)
                if not w.gold[int(r["item_id"][1:])]]
        return float(np.mean(hits)) if hits else float("nan")
