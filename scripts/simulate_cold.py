"""``taskrank simulate --http --cold [--concurrent N]``: the server as a platform runs it.

Per seed: a stratified train/test split; a project created with only its id and labels (the
project's default strategy) whose items are the train rows with features only (no
predictions, no boost); nothing is seeded, the server picks from the first label.

- Without ``--concurrent``: one expert takes ``batch`` tasks, labels each with the true
  class, then waits for the model trained on every label so far and its re-scored queue
  (once the server could train: ``min_labels`` labels of >= 2 classes); the project
  retrains every ``batch`` labels (``retrain.every_labels``), as in issue 12.
- With ``--concurrent N``: N experts, one thread and one keep-alive client each, claim and
  label as fast as they can at the project's own retrain cadence, never waiting for a
  retrain, until ``budget`` labels are counted.

Afterwards the counted labels are exported in stream order; the labelled set at checkpoint
``n`` is the first ``n`` of them. The judge (:mod:`taskrank.learning.baselines`) scores
that set, and the random and margin-sampling arms on the same split, at the same checkpoints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from sklearn.model_selection import train_test_split

from taskrank.client import ApiError, Client, ClientError
from taskrank.learning.baselines import checkpoints, judge_curve, margin_order, random_order
from taskrank.scripts.simulate_http import (
    _aulc,
    _export,
    _fresh_queue,
    _ingest,
    _new_pid,
    _seed_list,
    _wait,
)

ARMS = ("taskrank", "random", "margin")
NO_TASK_SLEEP = 0.05  # a 204 while others hold the last pending items: ask again shortly
Progress = Callable[[int], object] | None


def cold_curves(client: Client, X: np.ndarray, y: np.ndarray, patch: dict | None,
                seeds: int, initial: int, batch: int, budget: int, test_size: float,
                random_state: int, dataset: str, concurrent: int = 0,
                wait: float = 120.0, progress: Progress = None,
                label_seconds: float = 0.0) -> dict:
    """The three arms on each seed's split; ``{"strategies", "differences", ...}``."""
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    n_pool = len(y) - int(np.ceil(len(y) * test_size))
    if not initial <= budget <= n_pool:
        raise ValueError(f"--cold needs initial ({initial}) <= budget ({budget}) <= the "
                         f"pool ({n_pool} items after the test split)")
    counts = checkpoints(batch, budget)
    strategy = _strategy(patch, batch, concurrent)
    curves: dict[str, list] = {arm: [] for arm in ARMS}
    details = []
    for index, seed in enumerate(_seed_list(random_state, seeds)):
        run = _ColdRun(client, X, y, int(seed), test_size, wait,
                       label_seconds if concurrent else 0.0)
        pid = _new_pid("cold", dataset, index)
        detail = run.label(pid, strategy, budget, batch, concurrent, progress)
        for arm, curve in run.curves(detail.pop("order"), initial, batch, counts).items():
            curves[arm].append(curve.tolist())
        details.append(detail)
    arms = {arm: {"curves": c, "aulc": _aulc(c), "n_labels": counts.tolist()}
            for arm, c in curves.items()}
    return {"dataset": dataset, "mode": "cold", "strategies": arms,
            "differences": differences(arms), "seeds_detail": details,
            "config": {"mode": "cold", "seeds": seeds, "initial": initial, "batch": batch,
                       "budget": budget, "test_size": test_size,
                       "random_state": random_state, "concurrent": concurrent,
                       "label_seconds": label_seconds if concurrent else 0.0,
                       "experts": max(concurrent, 1), "strategy": strategy,
                       "retrain": details[0]["retrain"], "url": client.url,
                       "judge": "LogisticRegression(max_iter=1000)",
                       "n_samples": int(len(y)), "n_classes": int(np.unique(y).size)}}


def _strategy(patch: dict | None, batch: int, concurrent: int) -> dict | None:
    """What the project is created with: None (the defaults) unless a file or the
    sequential mode's retrain cadence asks for more; the cadence wins over the file's."""
    strategy = dict(patch or {})
    if not concurrent:  # checkpoints wait for a model trained on each batch
        strategy["retrain"] = {**strategy.get("retrain", {}), "every_labels": batch}
    return strategy or None


def differences(arms: dict) -> dict:
    """Paired per-seed differences, taskrank - each baseline, of AULC and the first
    table accuracy (acc@50, or acc@budget below 50 labels)."""
    counts = np.array(arms["taskrank"]["n_labels"])
    at = 50 if counts[-1] >= 50 else int(counts[-1])
    column = int(np.searchsorted(counts, at, side="right") - 1)  # last count <= at
    ours = np.array(arms["taskrank"]["curves"])
    out = {}
    for base in ARMS[1:]:
        theirs = np.array(arms[base]["curves"])
        aulc = ours.mean(axis=1) - theirs.mean(axis=1)
        acc = ours[:, column] - theirs[:, column]
        out[f"taskrank-{base}"] = {
            "aulc": {"per_seed": aulc.tolist(), "mean": float(aulc.mean())},
            f"acc@{at}": {"per_seed": acc.tolist(), "mean": float(acc.mean())}}
    return out


def difference_lines(result: dict) -> str:
    """The paired differences as report lines."""
    lines = ["paired differences per seed (taskrank - baseline):"]
    for name, measures in result["differences"].items():
        cells = [f"{measure} {m['mean']:+.4f} (per seed "
                 f"{', '.join(f'{d:+.3f}' for d in m['per_seed'])})"
                 for measure, m in measures.items()]
        lines.append(f"  {name}: " + "; ".join(cells))
    c = result["config"]
    pace = f" taking {c['label_seconds']:g} s per label" if c["concurrent"] else ""
    lines.append(f"mode: cold, {c['experts']} expert(s){' concurrent' * bool(c['concurrent'])}"
                 f"{pace}"
                 f", retrain every {c['retrain']['every_labels']} labels "
                 f"(min {c['retrain']['min_labels']})")
    return "\n".join(lines)


class _ColdRun:
    """One seed: the split, the project, its experts, the labelling, the judged curves."""

    def __init__(self, client: Client, X, y, seed: int, test_size: float, wait: float,
                 label_seconds: float = 0.0):
        self.client, self.seed, self.wait = client, seed, wait
        self.label_seconds = label_seconds
        self.X_pool, self.X_test, self.y_pool, self.y_test = train_test_split(
            X, y, test_size=test_size, stratify=y, random_state=seed)
        self.by_name = {str(c): c for c in np.unique(y)}

    def label(self, pid: str, strategy: dict | None, budget: int, batch: int,
              concurrent: int, progress: Progress) -> dict:
        """Run the labelling; the seed's detail with the labelled rows in stream order."""
        started = time.perf_counter()
        retrain = self._setup(pid, strategy)
        eids = [f"{pid}.e{k}" for k in range(max(concurrent, 1))]
        for eid in eids:  # no skill tags on items: any declared level fits
            self.client.put(f"/v1/experts/{eid}", {"skills": {"truth": 1.0}, "capacity": 1})
        try:
            if concurrent:
                _Crowd(self, pid, eids, budget, progress).run()
            else:
                self._sequential(pid, eids[0], budget, batch, retrain["min_labels"], progress)
        finally:
            for eid in eids:  # retired, so later runs never see them
                self.client.put(f"/v1/experts/{eid}", {"active": False})
        order, given = self._stream(pid)
        return {"project": pid, "seed": self.seed, "retrain": retrain,
                "seconds": round(time.perf_counter() - started, 1),
                "labels_counted": int(order.size),
                "items_labeled": int(np.unique(order).size), "order": (order, given)}

    def _setup(self, pid: str, strategy: dict | None) -> dict:
        """Create the project and ingest the pool; the retrain rule the server uses."""
        body = {"id": pid, "labels": list(self.by_name)}
        self.client.post("/v1/projects", body if strategy is None else {**body,
                                                                        "strategy": strategy})
        _ingest(self.client, pid, [{"id": f"i{row:06d}", "features": self.X_pool[row].tolist()}
                                   for row in range(self.X_pool.shape[0])])
        return self.client.get(f"/v1/projects/{pid}")["strategy"]["retrain"]

    def _sequential(self, pid: str, eid: str, budget: int, batch: int, min_labels: int,
                    progress: Progress) -> None:
        """One expert: a batch of tasks, then the model on all of them (when it can be)."""
        given: list = []
        while len(given) < budget:  # loop over batches
            for _ in range(min(batch, budget - len(given))):
                given.append(self.take(self.client, pid, eid, retry_until=None))
                if progress is not None:
                    progress(1)
            # Before min_labels, or with one class, the server skips training: no model comes.
            done = len(given)
            if done < budget and done >= min_labels and len(set(given)) >= 2:
                _wait(f"model on {done} labels and its re-scored queue", self.wait,
                      partial(_fresh_queue, self.client, pid, done))

    def take(self, client: Client, pid: str, eid: str, retry_until: float | None,
             stop: threading.Event | None = None):
        """Lease one task and label it with the truth; the label given. ``retry_until``
        (monotonic) keeps asking after a 204 until then, else a 204 is an error."""
        while (task := client.post(f"/v1/projects/{pid}/tasks/next",
                                   {"expert_id": eid})) is None:
            if retry_until is None or time.monotonic() > retry_until:
                raise ClientError(f"tasks/next answered 204 for {eid}: nothing left to claim")
            if stop is not None and stop.wait(NO_TASK_SLEEP):
                return None
        label = self.y_pool[int(task["task"]["item_id"][1:])]
        try:
            # The expert's time on the task: the server retrains meanwhile, as it does
            # while real experts read an item (minutes, not the 4 ms of an instant client).
            if self.label_seconds and stop is not None and stop.wait(self.label_seconds):
                raise ClientError("stopped while labelling")
            client.post(f"/v1/tasks/{task['task']['id']}/label",
                        {"label": str(label), "seconds_spent": self.label_seconds or 1})
        except BaseException:  # Ctrl-C or a failed label: give the lease back, then stop
            _release(client, task["task"]["id"])
            raise
        return label

    def _stream(self, pid: str) -> tuple[np.ndarray, np.ndarray]:
        """Counted labels in stream order: pool rows and the labels given."""
        records = _export(self.client, pid)
        rows = np.array([int(r["item_id"][1:]) for r in records], dtype=np.intp)
        return rows, np.array([self.by_name[r["label"]] for r in records])

    def curves(self, order: tuple[np.ndarray, np.ndarray], initial: int, batch: int,
               counts: np.ndarray) -> dict[str, np.ndarray]:
        """The judge's curve per arm, on this seed's split."""
        rows, given = order
        if rows.size < counts[-1]:
            raise ClientError(f"the server counted {rows.size} labels, fewer than the "
                              f"budget of {counts[-1]}")
        labels = self.y_pool.copy()
        labels[rows] = given  # what the server recorded (the truth, if it kept it right)
        split = (self.X_pool, self.X_test, self.y_test)
        budget, n_pool = int(counts[-1]), self.X_pool.shape[0]
        return {
            "taskrank": _judged(split, labels, rows, counts),
            "random": _judged(split, self.y_pool, random_order(n_pool, budget, self.seed),
                              counts),
            "margin": _judged(split, self.y_pool, margin_order(
                self.X_pool, self.y_pool, initial, batch, budget, self.seed), counts),
        }


def _judged(split: tuple, labels: np.ndarray, order: np.ndarray, counts) -> np.ndarray:
    X_pool, X_test, y_test = split
    return judge_curve(X_pool, labels, X_test, y_test, order, counts)


def _release(client: Client, tid: str) -> None:
    """Give a lease back; a lease that already ended needs nothing."""
    try:
        client.post(f"/v1/tasks/{tid}/release")
    except ApiError as error:
        if error.status not in (404, 409):
            raise


class _Crowd:
    """N experts in N threads, each claiming and labelling without waiting for retrains."""

    def __init__(self, run: _ColdRun, pid: str, eids: list[str], budget: int,
                 progress: Progress) -> None:
        self.run_, self.pid, self.eids, self.budget = run, pid, eids, budget
        self.progress, self.lock, self.stop = progress, threading.Lock(), threading.Event()
        self.reserved, self.errors = 0, []

    def run(self) -> None:
        """Start the experts, join them all (also on Ctrl-C), raise the first error."""
        threads = [threading.Thread(target=self._expert, args=(eid,), name=eid)
                   for eid in self.eids]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:  # short joins: the main thread stays open to Ctrl-C
                while thread.is_alive():
                    thread.join(0.2)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()
        if self.errors:
            raise self.errors[0]

    def _reserve(self) -> bool:
        """One more label may be claimed; claims never exceed the budget, so no task is
        leased that is not needed."""
        with self.lock:
            if self.stop.is_set() or self.reserved >= self.budget:
                return False
            self.reserved += 1
            return True

    def _expert(self, eid: str) -> None:
        client = self.run_.client.clone()  # keep-alive, one per thread: not thread-safe
        try:
            while self._reserve():  # loop over this expert's tasks
                deadline = time.monotonic() + self.run_.wait
                if self.run_.take(client, self.pid, eid, deadline, self.stop) is None:
                    return
                if self.progress is not None:
                    with self.lock:
                        self.progress(1)
        except Exception as error:  # noqa: BLE001 - handed to the main thread, re-raised
            with self.lock:
                self.errors.append(error)
            self.stop.set()
        finally:
            client.close()
