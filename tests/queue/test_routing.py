"""Routing on real Redis: eligibility under concurrency, learned skills, redundancy, hold-back."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.connection import connect
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project, update_project
from taskrank.queue.skills import best_experts_cache, load_profile
from tests.cluster import both_backends
from tests.pools import NO_CHECKS

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

TAGS = ["cardio", "neuro", "onco"]


def _items(n, tags_of, gold_of=None, predictions=(0.5, 0.5)):
    return [{"id": f"i{i}", "predictions": {"m": list(predictions)}, "skills": tags_of(i),
             **({"gold": gold_of(i)} if gold_of else {})} for i in range(n)]


def _project(r, wanted=1, **strategy):
    create_project(r, {"id": "p", "labels": ["no", "yes"], "redundancy": wanted,
                       "strategy": strategy})
    return get_project(r, "p")


def test_eligibility_and_capacity_hold_under_16_concurrent_experts(r, settings):
    """16 experts with overlapping skills claim and label at once: nobody gets an item
    lacking its skills, over capacity, or one it leased before; no item is over-leased."""
    project = _project(r, wanted=2)
    ingest(r, project, _items(400, lambda i: [TAGS[i % 3]] if i % 4 else []))
    rng = random.Random(0)
    skills = {f"e{j}": {tag: 0.8 for tag in rng.sample(TAGS, rng.randint(1, 2))}
              for j in range(16)}
    for eid, declared in skills.items():
        put_expert(r, eid, {"skills": declared, "capacity": 3})
    violations, claims = [], defaultdict(list)

    def work(eid):
        client = connect(settings)
        expert, held = load_expert(client, eid), []
        for step in range(60):
            task = tasks.claim(client, project, expert, depth=16)
            if task is None:
                break
            claims[eid].append(task["item_id"])
            held.append(task["id"])
            tags = client.hget(K.item_key("p", task["item_id"]), "s")
            if tags and not set(tags.split(",")) <= set(skills[eid]):
                violations.append((eid, task["item_id"], "skill"))
            if client.zcard(K.expert_leases_key("p", eid)) > 3:
                violations.append((eid, task["item_id"], "capacity"))
            if len(held) == 3 or step % 2:
                tid = held.pop(0)
                tasks.submit_label(client, project, tid, "yes", 1.0)

    threads = [threading.Thread(target=work, args=(eid,)) for eid in skills]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert violations == []
    for eid, items in claims.items():
        assert len(items) == len(set(items)), f"{eid} got an item twice"
    counts = defaultdict(int)
    for items in claims.values():
        for iid in items:
            counts[iid] += 1
    assert max(counts.values()) <= 2


def test_learned_skills_route_strong_tag_first(r, settings):
    """An expert accurate on cardio and poor on neuro learns so from the gold items it is
    served, and is then routed cardio items before neuro items."""
    # phase 1: routing ignores fit and cost (labels of 1 s would make the first skill
    # labelled look far cheaper than one with no reported times yet)
    project = _project(r, routing={"fit_exponent": 0.0, "cost_exponent": 0.0},
                       qa={"gold_rate": 1.0, "qualify": {"min_accuracy": 0.0}})
    truth = {f"g{i}": "yes" if i % 3 else "no" for i in range(120)}
    items = _items(200, lambda i: [TAGS[i % 2]])
    for i, item in enumerate(items):  # distinct priorities that interleave the two tags
        item["predictions"]["m"] = [0.5 + i / 1000, 0.5 - i / 1000]
    gold = [{"id": gid, "predictions": {"m": [0.5, 0.5]}, "skills": [TAGS[i % 2]],
             "gold": truth[gid]} for i, gid in enumerate(truth)]
    ingest(r, project, items + gold)
    put_expert(r, "dr", {"skills": {"cardio": 0.7, "neuro": 0.7}, "capacity": 1})
    rng = random.Random(1)
    accuracy = {"cardio": 0.95, "neuro": 0.35}
    for _ in range(80):
        task = tasks.claim(r, project, load_expert(r, "dr"), depth=32)
        iid = task["item_id"]
        tag = r.hget(K.item_key("p", iid), "s")
        right = rng.random() < accuracy[tag]
        answer = truth.get(iid, "yes") if right else ("no" if truth.get(iid) == "yes" else "yes")
        status, body = tasks.submit_label(r, project, task["id"], answer, 1.0)
        after_label(r, project, body, settings)
    profile = load_profile(r, project, load_expert(r, "dr"))
    learned = profile.table(profile.posterior.mean)
    assert learned["cardio"] > 0.85 and learned["neuro"] < 0.55
    project, _ = update_project(r, "p", {"strategy": {"routing": {"fit_exponent": 4.0,
                                                                  "cost_exponent": 0.0},
                                                      "qa": {"gold_rate": 0.0}}})
    expert = load_expert(r, "dr")
    next_tags = []
    for _ in range(10):
        task = tasks.claim(r, project, expert, depth=32)
        next_tags.append(r.hget(K.item_key("p", task["item_id"]), "s"))
        tasks.release(r, project, task["id"])
    assert next_tags == ["cardio"] * 10


def _label_all(r, settings, project, experts, answer_of):
    """Round-robin experts over the pool until nothing is left; returns labels per item."""
    progress = True
    while progress:
        progress = False
        for eid in experts:
            task = tasks.claim(r, project, load_expert(r, eid), depth=32)
            if task is None:
                continue
            progress = True
            status, body = tasks.submit_label(r, project, task["id"],
                                              answer_of(eid, task["item_id"]), 1.0)
            assert status == 201
            after_label(r, project, body, settings)
    by_item = defaultdict(list)
    for entry in r.xrange(K.labels_stream_key("p")):
        fields = entry[1]
        assert fields["counted"] == "1"
        by_item[fields["item"]].append(fields["expert"])
    return by_item


def test_redundancy_three_gives_three_distinct_experts(r, settings):
    """With redundancy 3, every item gets exactly 3 counted labels from 3 distinct experts."""
    project = _project(r, wanted=3)
    ingest(r, project, _items(30, lambda i: []))
    for j in range(5):
        put_expert(r, f"e{j}", {"skills": {}, "capacity": 2})
    by_item = _label_all(r, settings, project, [f"e{j}" for j in range(5)], lambda e, i: "yes")
    assert len(by_item) == 30
    assert all(len(experts) == 3 == len(set(experts)) for experts in by_item.values())


def _adaptive_run(r, settings, stop_confidence, answer):
    project = _project(r, wanted=3, redundancy={"adaptive": True, "max_labels": 4,
                                                "stop_confidence": stop_confidence},
                       **NO_CHECKS)
    ingest(r, project, _items(20, lambda i: []))
    for j in range(6):
        put_expert(r, f"e{j}", {"skills": {}, "capacity": 1})
    by_item = _label_all(r, settings, project, [f"e{j}" for j in range(6)], answer)
    assert len(by_item) == 20
    for iid, experts in by_item.items():
        assert len(experts) == len(set(experts))
        assert r.hget(K.item_key("p", iid), "st") == "labeled"
    return {iid: len(experts) for iid, experts in by_item.items()}


def test_adaptive_redundancy_stops_early_when_labels_agree(r, settings):
    """Two agreeing labels with confidence above stop_confidence finish an item that
    wanted three."""
    counts = _adaptive_run(r, settings, 0.9, lambda eid, iid: "yes")
    assert set(counts.values()) == {2}


def test_adaptive_redundancy_asks_for_more_when_labels_disagree(r, settings):
    """Split labels with low confidence ask for one more label, up to max_labels; unanimous
    items below the stop confidence keep their three."""

    def answer(eid, iid):
        if int(iid[1:]) % 2 == 0:
            return "yes"
        return "yes" if int(eid[1:]) % 2 == 0 else "no"

    counts = _adaptive_run(r, settings, 0.999, answer)
    assert all(n == (3 if int(iid[1:]) % 2 == 0 else 4) for iid, n in counts.items()), counts


def test_hold_back_keeps_an_item_for_the_better_expert(r, settings):
    """During the hold-back time, a markedly better active expert with spare capacity gets
    the tagged item; the weaker one asking first gets nothing from that tag."""
    project = _project(r, routing={"holdback_seconds": 60.0, "holdback_margin": 0.1})
    ingest(r, project, _items(1, lambda i: ["onco"]))
    put_expert(r, "junior", {"skills": {"onco": 0.6}, "capacity": 2})
    put_expert(r, "senior", {"skills": {"onco": 0.95}, "capacity": 2})
    r.zadd(K.working_experts_key("p"), {"senior": time.time()})  # the senior is working
    best_experts_cache.clear()
    assert tasks.claim(r, project, load_expert(r, "junior"), depth=8) is None
    assert tasks.claim(r, project, load_expert(r, "senior"), depth=8)["item_id"] == "i0"
    later = tasks.claim(r, get_project(r, "p"), load_expert(r, "junior"), depth=8)
    assert later is None  # the only item is leased now
    best_experts_cache.clear()


def test_a_spammer_gets_under_5_percent_of_real_items_after_200_labels(r, settings):
    """8 experts at project defaults (redundancy 1, gold 5 % of the pool; no hold-back,
    see below): the spammer
    declares 0.9, answers at chance (1/k), and is the cheapest and fastest of them, so
    cost steering favours it.  Once 200 labels are in, it gets under 5 % of the real items
    the next 400 claims hand out."""
    labels = ["w", "x", "y", "z"]
    # No hold-back: what it turns away depends on how fresh its cached view of the best
    # experts is (wall time), and it is not what keeps a spammer out (the spammer is the
    # best value per dollar it knows of until the gate flags it).
    create_project(r, {"id": "p", "labels": labels,
                       "strategy": {"routing": {"holdback_seconds": 0}}})
    project = get_project(r, "p")
    rng = random.Random(7)
    truth = {f"i{n}": rng.choice(labels) for n in range(800)}
    truth.update({f"g{n}": rng.choice(labels) for n in range(40)})
    ingest(r, project, [{"id": iid, "predictions": {"m": [0.25] * 4}, "skills": ["t"],
                         **({"gold": answer} if iid.startswith("g") else {})}
                        for iid, answer in truth.items()])
    experts = {f"e{n}": (0.8 + 0.02 * n, 100.0 + 15 * n, 120.0) for n in range(7)}
    experts["spam"] = (1 / len(labels), 50.0, 30.0)  # accuracy, $ per hour, seconds
    for eid, (accuracy, rate, _) in experts.items():
        put_expert(r, eid, {"skills": {"t": 0.9 if eid == "spam" else accuracy},
                            "capacity": 1, "cost_per_hour": rate})
    spam_real, real = 0, 0
    for n in range(600):
        eid = rng.choice(sorted(experts))
        task = tasks.claim(r, project, load_expert(r, eid), depth=32)
        if task is None:
            continue
        iid = task["item_id"]
        accuracy, _, seconds = experts[eid]
        right = rng.random() < accuracy
        answer = truth[iid] if right else rng.choice([c for c in labels if c != truth[iid]])
        status, body = tasks.submit_label(r, project, task["id"], answer, seconds)
        assert status == 201
        after_label(r, project, body, settings)
        if n >= 200 and iid.startswith("i"):
            real += 1
            spam_real += eid == "spam"
    assert real > 300
    assert spam_real / real < 0.05, (spam_real, real)
