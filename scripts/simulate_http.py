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

Routing (``--experts``): the worlds of ``simulate_routing``, seed for seed, and the rule the
server runs.  Per seed, a project at the server's defaults (the requested ``redundancy``, the
``--strategy-file`` strategy if any); its items are the world's real items and its gold
bank (``gold``: the answer; the server keeps them out of the pool and serves them itself as
checks), each with one flat supplied prediction, its skill-domain tag and the world's
priority as ``boost`` (so the server and the replay rank items alike).  Experts declare
their skills and ``cost_per_hour`` (the world's rate), ask ``tasks/next`` in the replay's
seeded random order, answer as the world says and report the label's true seconds in
``seconds_spent``.  A 204 ``nothing_eligible`` (an item held back for a better expert at
work) is asked again later; the run ends at ``n_labels`` labels (gold and spot checks
included) or when every expert is refused for ``IDLE_ROUNDS`` rounds.  The server retrains
at the strategy's cadence (Dawid-Skene re-aggregation feeds the posteriors), and once more
at the end; the figures of ``_evaluate`` are then computed from its counted labels and
aggregated labels.  Only the taskrank arm runs through the server: random and oracle (which
pays nothing to learn) are the in-process replay's, on the same worlds.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from taskrank.client import ApiError, Client, ClientError
from taskrank.learning.aggregation import ACCURACY_BOUNDS
from taskrank.learning.priority import Strategy, score
from taskrank.learning.ranker import TaskRanker
from taskrank.learning.routing import label_cost
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
# A 204 of tasks/next names its reason in this header (server/tasks.py); nothing_eligible
# may pass (an item waits for a better expert at work), any other refusal does not.
REASON_HEADER, NOTHING_ELIGIBLE = "Taskrank-Reason", "nothing_eligible"
IDLE_ROUNDS = 3  # rounds in which every expert still asking was refused end a routing run
IDLE_WAIT = 0.5  # seconds after such a round: past the server's expert caches (1 s default)
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
    """The model version once it has every label and the queue is re-ranked with it (its
    re-score run's top is done: what claims read has the model's scores)."""
    model = client.get(f"/v1/projects/{pid}/model")
    if model["version"] is None or model["n_labels"] < n_labels:
        return None
    return model["version"] if model.get("reranked") else None


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
            random_state: int, dataset: str, strategy: dict | None = None,
            wait: float = 120.0, progress: Progress = None) -> dict:
    """The taskrank arm through the server, random and oracle in process, on the worlds of
    ``simulate_routing`` seed for seed; all three arms in process beside them."""
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    library = simulate_routing(X, y, n_domains=n_domains, n_experts=n_experts,
                               n_labels=n_labels, redundancy=redundancy, seeds=seeds,
                               gold=gold, overclaim=overclaim, strategy=strategy,
                               random_state=random_state, progress=progress)
    config = library["config"]
    served, details = defaultdict(list), []
    for index, seed in enumerate(_seed_list(random_state, seeds)):
        world = make_world(X, y, config["pool"], n_domains, n_experts, gold, overclaim, seed)
        run = _RoutingRun(client, world, _new_pid("route", dataset, index), wait)
        figures, detail = run.run(redundancy, config["capacity"], n_labels, int(seed), strategy)
        for key, number in figures.items():
            served[key].append(number)
        details.append(detail)
        if progress is not None:
            progress(1)
    arms = {"taskrank": arm_summary(served),
            **{arm: library["arms"][arm] for arm in ROUTING_ARMS if arm != "taskrank"}}
    return {"dataset": dataset, "config": {**config, "url": client.url,
                                           "strategy_sent": strategy},
            "arms": arms, "gap_closed": gap_closed(arms), "seeds_detail": details,
            "in_process": {"arms": library["arms"], "gap_closed": library["gap_closed"]}}


def routing_figures(world, labels: np.ndarray, finals: dict[int, int],
                    redundancy: int) -> dict:
    """The figures of ``learning.simulate._evaluate`` from what the server holds.

    ``labels`` (n_labels, 3): item, expert and answer of each counted label; ``finals``:
    the server's aggregated label of each finished item.  Dollars are rate x true seconds
    of every label; overhead is the labels on gold items plus the labels beyond
    ``redundancy`` on real ones (spot checks); a real item not finished yet (its spot
    check still pending) counts with the most frequent of its labels."""
    labels = np.asarray(labels, dtype=np.intp).reshape(-1, 3)
    items, experts = labels[:, 0], labels[:, 1]
    n_items = world.truth.shape[0]
    dollars = float(label_cost(world.rate[experts], world.label_seconds[experts, items]).sum())
    real = ~world.gold[items]
    per_item = np.bincount(items[real], minlength=n_items)
    overhead = int((~real).sum()) + int(np.maximum(per_item - redundancy, 0).sum())
    votes = np.zeros((n_items, world.n_classes))
    np.add.at(votes, (items[real], labels[real, 2]), 1.0)
    final = np.where(per_item > 0, votes.argmax(axis=1), -1)
    for item, answer in finals.items():
        final[item] = answer
    scored = (final >= 0) & ~world.gold
    hits = final[scored] == world.truth[scored]
    right = int(hits.sum())
    return {"accuracy": float(hits.mean()) if hits.size else float("nan"),
            "correct_items": right, "cost": dollars,
            "correct_per_1000_usd": 1000.0 * right / dollars if dollars else 0.0,
            "overhead_share": overhead / labels.shape[0] if labels.size else 0.0,
            "labels": int(labels.shape[0])}


class _RoutingRun:
    """One seed of the taskrank arm: a project at the server's defaults, its experts, the
    asking loop, the final aggregation."""

    def __init__(self, client: Client, world, pid: str, wait: float) -> None:
        self.client, self.world, self.pid, self.wait = client, world, pid, wait
        self.names = [str(c) for c in range(world.n_classes)]
        self.tags = [f"{pid}-d{d}" for d in range(world.true_acc.shape[1])]
        self.eids = [f"{pid}.e{e}" for e in range(world.true_acc.shape[0])]
        self.refusals: dict[str, int] = defaultdict(int)  # 204s of tasks/next by reason

    def run(self, redundancy: int, capacity: int, n_labels: int, seed: int,
            strategy: dict | None) -> tuple[dict, dict]:
        """(the figures, what the server reported) of this seed."""
        started = time.perf_counter()
        self._setup(redundancy, strategy)
        given = self._ask(n_labels, capacity, check_random_state(seed))
        for e in range(len(self.eids)):  # retired: never someone's better expert again
            self._declare(e, active=False)
        finals = self._final_labels()
        labels = [(int(r["item_id"][1:]), self.eids.index(r["expert_id"]),
                   self.names.index(r["label"])) for r in _export(self.client, self.pid)]
        if len(labels) != len(given):
            raise ClientError(f"{self.pid}: the server counted {len(labels)} labels, "
                              f"{len(given)} were given")
        spend = self.client.get(f"/v1/projects/{self.pid}/spend")
        figures = routing_figures(self.world, np.array(labels), finals, redundancy)
        items = np.array([item for item, _, _ in labels], dtype=np.intp)
        return figures, {
            "project": self.pid, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
            "gold_labels": int(self.world.gold[items].sum()),
            "server_spent_usd": spend["spent_usd"], "refusals": dict(self.refusals)}

    def _declare(self, e: int, active: bool = True) -> None:
        """The expert's declaration: the world's declared skills, capacity 1, its rate."""
        w = self.world
        self.client.put(f"/v1/experts/{self.eids[e]}", {
            "skills": {tag: float(level) for tag, level in zip(self.tags, w.declared[e],
                                                                strict=True)},
            "capacity": 1, "cost_per_hour": float(w.rate[e]), "active": active})

    def _setup(self, redundancy: int, strategy: dict | None) -> None:
        w = self.world
        self.client.post("/v1/projects", {"id": self.pid, "labels": self.names,
                                          "redundancy": redundancy,
                                          **({} if strategy is None else {"strategy": strategy})})
        for e in range(len(self.eids)):
            self._declare(e)
        flat = [1.0 / w.n_classes] * w.n_classes  # ranks nothing: the boost orders the queue
        # Gold items too: the server keeps them out of the pool and serves them as checks.
        _ingest(self.client, self.pid, [
            {"id": f"i{n}", "predictions": {"flat": flat}, "skills": [self.tags[w.domain[n]]],
             "boost": float(w.priority[n]),
             **({"gold": self.names[w.truth[n]]} if w.gold[n] else {})}
            for n in range(w.truth.shape[0])])

    def _next(self, e: int) -> tuple[dict | None, str]:
        """The expert's next task, or None and the reason of the server's 204."""
        answer = self.client.send("POST", f"/v1/projects/{self.pid}/tasks/next",
                                  {"expert_id": self.eids[e]})
        if answer.status not in (200, 204):
            body = answer.body if isinstance(answer.body, dict) else {}
            raise ApiError(answer.status, str(body.get("title", "")),
                           str(body.get("detail", answer.body)), answer.body)
        if answer.status == 204:
            return None, answer.headers.get(REASON_HEADER.lower(), "")
        return answer.body["task"], ""

    def _ask(self, n_labels: int, capacity: int, rng) -> list[tuple[int, int]]:
        """Experts ask in the replay's seeded random order until ``n_labels`` labels (gold
        and spot checks included), or until every expert still asking was refused
        (``nothing_eligible``: items wait for a better expert at work) for ``IDLE_ROUNDS``
        rounds in a row, each followed by ``IDLE_WAIT`` seconds.  An expert leaves at its
        capacity (inactive, so no item waits for it) or on another refusal."""
        given, done = [], np.zeros(len(self.eids), dtype=int)
        asking, refused, idle = set(range(len(self.eids))), set(), 0
        while len(given) < n_labels and asking:  # loop over requests
            e = int(rng.randint(len(self.eids)))
            if e not in asking:
                continue
            task, reason = self._next(e)
            if task is None:
                self.refusals[reason] += 1
                if reason != NOTHING_ELIGIBLE:
                    asking.discard(e)
                    continue
                refused.add(e)
                if refused >= asking:
                    idle, refused = idle + 1, set()
                    if idle >= IDLE_ROUNDS:
                        break
                    time.sleep(IDLE_WAIT)
                continue
            refused, idle = set(), 0
            item = int(task["item_id"][1:])
            self.client.post(f"/v1/tasks/{task['id']}/label", {
                "label": self.names[self.world.answers[e, item]],
                "seconds_spent": float(self.world.label_seconds[e, item])})
            given.append((item, e))
            done[e] += 1
            if done[e] >= capacity:
                asking.discard(e)
                self._declare(e, active=False)
        return given

    def _final_labels(self) -> dict[int, int]:
        """The server's aggregated label of each finished item (class index), after a
        retrain re-aggregated every item (Dawid-Skene over all labels)."""
        job = self.client.post(f"/v1/projects/{self.pid}/retrain")["job_id"]
        status = _wait("the final retrain", self.wait, lambda: {"finished", "failed"} & {
            self.client.get(f"/v1/jobs/{job}")["status"]})
        if "failed" in status:  # its Dawid-Skene step may not have run
            raise ClientError(f"the final retrain of {self.pid} failed: see GET /v1/jobs/{job}")
        return {int(r["item_id"][1:]): self.names.index(r["label"])
                for r in _export(self.client, self.pid, aggregated=True)}
