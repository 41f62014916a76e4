"""A stateful property test of the pool against real Redis: random sequences of ingest,
next task (several experts, one or several tasks a claim), label (with replays), labels
without a lease (with retries), withdrawal, extend, release, time passing (expiry and
sweep), stale re-scores and retrains keep the store consistent after every step."""

from __future__ import annotations

import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.exceptions import InvalidInputError, LeaseNotOpenError
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.label_import import finish_import, import_labels
from taskrank.queue.lifecycle import withdraw_item
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.rescore_items import rescore_items
from taskrank.queue.settings import Settings, install
from tests.cluster import both_backends
from tests.invariants import check_store, pooled

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

PID = "p"
ITEM_IDS = [f"i{n}" for n in range(3)]  # few, so experts meet on the same items
SKILLS = [[], [], ["x"], ["y"], ["x", "y"]]
EXPERTS = {"e0": {}, "e1": {"x": 0.9}, "e2": {"x": 0.6, "y": 0.8}, "e3": {"y": 0.7}}
LEASE_SECONDS = 60
START = 1_700_000_000.0

probability = st.floats(0.02, 0.98).map(lambda p: [round(p, 4), round(1 - round(p, 4), 4)])


class PoolMachine(RuleBasedStateMachine):
    """The model keeps only what the store cannot tell: the tasks handed out and the
    answers given to idempotent label requests."""

    r: redis.Redis
    settings: Settings

    @initialize(redundancy=st.sampled_from([1, 2, 3, 3]), adaptive=st.booleans(),
                data=st.data())
    def start(self, redundancy: int, adaptive: bool, data: st.DataObject) -> None:
        self.r.flushdb()
        self.now = START
        create_project(self.r, {"id": PID, "labels": ["a", "b"], "redundancy": redundancy,
                                "lease_seconds": LEASE_SECONDS, "strategy": {
                                    "redundancy": {"adaptive": adaptive, "max_labels": 3,
                                                   "stop_confidence": 0.6}}})
        for eid, skills in EXPERTS.items():
            put_expert(self.r, eid, {"skills": skills, "capacity": 2})
        self.handed_out: list[str] = []  # task ids, in order
        self.answers: dict[tuple[str, str], tuple[int, dict]] = {}  # (task, key) -> answer
        self.snapshot: list[str] = []
        self.withdrawn: set[str] = set()
        self.ingest(ITEM_IDS, data)

    @property
    def project(self) -> dict:
        return get_project(self.r, PID)

    @rule(ids=st.lists(st.sampled_from(ITEM_IDS), min_size=1, max_size=3, unique=True),
          data=st.data())
    def ingest(self, ids: list[str], data: st.DataObject) -> None:
        """Upsert items (new ones, or existing ones with new predictions and skills)."""
        items = [{"id": iid, "predictions": {"m": data.draw(probability)},
                  "skills": data.draw(st.sampled_from(SKILLS)),
                  "boost": data.draw(st.sampled_from([0, 0, 0.5]))} for iid in ids]
        result = ingest(self.r, self.project, items)
        assert result["created"] + result["updated"] + len(result["rejected"]) == len(ids)
        assert {row["id"] for row in result["rejected"]} <= self.withdrawn

    @rule(eids=st.lists(st.sampled_from(sorted(EXPERTS)), min_size=1, max_size=3),
          n=st.sampled_from([1, 1, 2, 3]))
    def next_task(self, eids: list[str], n: int) -> None:
        """Several experts ask for their next tasks (n in one claim), one after the other."""
        for eid in eids:
            expert = load_expert(self.r, eid)
            held = self.r.zcard(K.expert_leases_key(PID, eid))
            leased, refusal = tasks.lease_tasks(self.r, self.project, expert, 2, n,
                                                now=self.now)
            assert len(leased) <= n and (refusal is None) == (len(leased) == n)
            assert len({task["item_id"] for task in leased}) == len(leased)
            assert self.r.zcard(K.expert_leases_key(PID, eid)) <= max(held, expert["capacity"])
            self.handed_out += [task["id"] for task in leased]

    @rule(records=st.lists(st.tuples(st.sampled_from(ITEM_IDS + ["nope"]),
                                     st.sampled_from(["a", "b"]),
                                     st.sampled_from([None, *EXPERTS, "ghost"]),
                                     st.sampled_from([None, "s1", "s2"])),
                           min_size=1, max_size=4),
          retry=st.booleans())
    def import_labels(self, records: list[tuple], retry: bool) -> None:
        """Labels without a lease, good and bad, by an expert or from a source; a retry of
        the batch counts nothing more."""
        batch = [{"item_id": iid, "label": label, "expert_id": eid, "source": source}
                 for iid, label, eid, source in records]
        try:
            first = import_labels(self.r, self.project, batch, now=self.now)
        except InvalidInputError:
            return  # no record could be recorded
        finish_import(self.r, self.project, first)
        answer = first.answer
        assert (answer["counted"] + answer["duplicates"] + len(answer["not_counted"])
                + len(answer["rejected"])) == len(batch)
        if retry:
            again = import_labels(self.r, self.project, batch, now=self.now)
            finish_import(self.r, self.project, again)
            assert again.answer["counted"] == 0 and not again.answer["not_counted"]
            assert again.answer["rejected"] == answer["rejected"]

    @rule(iid=st.sampled_from(ITEM_IDS))
    def withdraw(self, iid: str) -> None:
        """Withdraw an item: it never comes back, its open leases end."""
        outcome = withdraw_item(self.r, self.project, iid, now=self.now)
        assert outcome["withdrawn"] == (iid not in self.withdrawn)
        self.withdrawn.add(iid)
        assert self.r.hget(K.item_key(PID, iid), "st") == "withdrawn"

    @precondition(lambda self: self.handed_out)
    @rule(data=st.data(), label=st.sampled_from(["a", "a", "b"]),
          key=st.sampled_from([None, "k1"]))
    def label_open(self, data: st.DataObject, label: str, key: str | None) -> None:
        """Label a task whose lease is open (when there is one): the common case."""
        self.label(data.draw(st.sampled_from(self.open_tasks() or self.handed_out)), label,
                   key)

    @precondition(lambda self: self.handed_out)
    @rule(data=st.data(), label=st.sampled_from(["a", "b"]),
          key=st.sampled_from([None, "k1", "k2"]))
    def label_any(self, data: st.DataObject, label: str, key: str | None) -> None:
        """Label any task handed out: late, labeled already, or a client's retry."""
        self.label(data.draw(st.sampled_from(self.handed_out)), label, key)

    def label(self, tid: str, label: str, key: str | None) -> None:
        if key is not None and (tid, key) in self.answers:
            label = self.answers[(tid, key)][1]["label"]  # a client's retry: same body
        status, body = tasks.submit_label(self.r, self.project, tid, label, 30.0, key,
                                          now=self.now)
        if key is not None:
            first = self.answers.setdefault((tid, key), (status, body))
            assert (status, body) == first, "a replay answers what the first request did"
        if status == 201:
            aggregate_item(self.r, self.project, body["item_id"])

    def open_tasks(self) -> list[str]:
        pipe = self.r.pipeline(transaction=False)
        for tid in self.handed_out:
            pipe.hget(K.task_key(PID, tid), "st")
        return [tid for tid, state in zip(self.handed_out, pipe.execute(), strict=True)
                if state == "open"]

    @precondition(lambda self: self.handed_out)
    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.handed_out))
        state = self.r.hget(K.task_key(PID, tid), "st")
        expired = float(self.r.hget(K.task_key(PID, tid), "exp")) < self.now
        try:
            task = tasks.extend(self.r, self.project, tid, now=self.now)
        except LeaseNotOpenError:
            assert state != "open" or expired
        else:
            assert state == "open" and not expired and task["state"] == "open"

    @precondition(lambda self: self.handed_out)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.handed_out))
        try:
            tasks.release(self.r, self.project, tid, now=self.now)
        except LeaseNotOpenError:
            assert self.r.hget(K.task_key(PID, tid), "st") in ("labeled", "expired",
                                                               "withdrawn")

    @rule(seconds=st.sampled_from([1.0, 20.0, LEASE_SECONDS - 1.0, LEASE_SECONDS + 1.0]))
    def advance_time(self, seconds: float) -> None:
        self.now += seconds
        if seconds > LEASE_SECONDS / 2:
            tasks.sweep(self.r, PID, now=self.now)

    @rule(stale=st.booleans())
    def retrain(self, stale: bool) -> None:
        """Re-score the pool with the current committee: the pool now, or (as a re-score
        run does) the snapshot the previous run captured, which may have gone stale."""
        pool = sorted(pooled(self.r, PID))
        rescore_items(self.r, self.project, self.snapshot if stale else pool)
        self.snapshot = pool

    @invariant()
    def store_is_consistent(self) -> None:
        # No model is trained here: a re-score reproduces the ingest priorities, so every
        # live score must still be the item's stored 'pr' (claims keep it current).
        check_store(self.r, PID, scores_are_pr=True)


def test_pool_stays_consistent(r: redis.Redis, settings: Settings) -> None:
    """Bounded random runs (30 examples x 30 steps) never break a store invariant."""
    # No per-process cache: the hold-back's best experts, kept 1 s of wall time, would make
    # a replayed example claim otherwise when the run is slow (hypothesis: "flaky").
    install(settings.replace(cache_seconds=0))  # the settings fixture restores its own
    PoolMachine.r, PoolMachine.settings = r, settings
    run_state_machine_as_test(PoolMachine, settings=settings_for_ci())


def settings_for_ci() -> hypothesis_settings:
    return hypothesis_settings(max_examples=30, stateful_step_count=30, deadline=None,
                               suppress_health_check=[HealthCheck.too_slow])



def _early_stop(r: redis.Redis) -> tuple[dict, list[dict]]:
    """Three experts hold item i0 (3 labels wanted); two agree, which stops it early."""
    create_project(r, {"id": PID, "labels": ["a", "b"], "redundancy": 3, "strategy": {
        "redundancy": {"adaptive": True, "max_labels": 3, "stop_confidence": 0.6}}})
    project = get_project(r, PID)
    ingest(r, project, [{"id": "i0", "predictions": {"m": [0.5, 0.5]}}])
    for eid in ("e0", "e1", "e2"):
        put_expert(r, eid, {"skills": {}, "capacity": 1})
    held = [tasks.claim(r, project, load_expert(r, eid), 4, now=START)
            for eid in ("e0", "e1", "e2")]
    for task in held[:2]:
        status, body = tasks.submit_label(r, project, task["id"], "a", 10.0, now=START + 1)
        assert status == 201
        aggregate_item(r, project, body["item_id"])
    return project, held


def test_early_stop_keeps_the_label_already_handed_out(r: redis.Redis) -> None:
    """Found by the machine above: an early stop lowered `want` to 2 while a third lease was
    out, and that label then made 3 counted labels on an item wanting 2. The lease out still
    counts, and the item wants exactly the labels it holds."""
    project, held = _early_stop(r)
    assert r.hmget(K.item_key(PID, "i0"), "want", "st") == ["3", "leased"]
    status, _ = tasks.submit_label(r, project, held[2]["id"], "a", 10.0, now=START + 2)
    assert status == 201
    assert r.hmget(K.item_key(PID, "i0"), "done", "want", "st") == ["3", "3", "labeled"]
    check_store(r, PID)


def test_early_stop_target_is_reached_when_the_lease_out_expires(r: redis.Redis) -> None:
    """When the third lease expires unlabeled, the item finishes with the 2 labels it has
    instead of going back to the pool."""
    _early_stop(r)
    assert tasks.sweep(r, PID, now=START + LEASE_SECONDS * 100) == 1
    assert r.hmget(K.item_key(PID, "i0"), "done", "want", "st") == ["2", "2", "labeled"]
    assert not pooled(r, PID)
    check_store(r, PID)
