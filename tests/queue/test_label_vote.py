"""The LABEL script's own aggregation of an item's only label, against aggregate.py."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project
from tests.cluster import both_backends

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def _labeled_once(r, settings, labels, skills, given, gold=None, redundancy=1):
    """One item, one expert with ``skills``, one counted label; (answer, project)."""
    create_project(r, {"id": "p", "labels": labels, "redundancy": redundancy})
    project = get_project(r, "p")
    ingest(r, project, [{"id": "i0", "predictions": {"m": [1 / len(labels)] * len(labels)},
                         "skills": list(skills), **({"gold": gold} if gold else {})}])
    put_expert(r, "e", {"skills": skills})
    task = tasks.claim(r, project, load_expert(r, "e"), depth=8)
    status, answer = tasks.submit_label(r, project, task["id"], given, 1.0)
    assert status == 201
    after_label(r, project, answer, settings)
    return answer, project


def _stored(r):
    return r.hmget(K.item_key("p", "i0"), "al", "ac")


@pytest.mark.parametrize("skills", [{}, {"x": 0.73}, {"x": 0.9, "y": 0.6123}, {"x": 1.0}])
def test_only_label_is_aggregated_in_lua_as_python_would(r, settings, skills):
    """An item's only label is aggregated by the script (no Python round trips), with the
    label and confidence aggregate.py stores, and the item joins the labeled set."""
    answer, project = _labeled_once(r, settings, ["a", "b", "c"], skills, "b")
    assert answer["aggregated"] is True
    in_lua = _stored(r)
    assert r.zscore(K.labeled_key("p"), "i0") == 0
    label, confidence = aggregate_item(r, project, "i0")
    assert in_lua == [label, str(confidence)] == _stored(r)


def test_an_expert_below_chance_is_left_to_python(r, settings):
    """When the expert's accuracy is under 1/k another class wins the vote: the script does
    not aggregate and aggregate.py stores the winner."""
    answer, _ = _labeled_once(r, settings, ["a", "b"], {"x": 0.1}, "a")
    assert answer["aggregated"] is False
    assert _stored(r) == ["b", "0.9"]
    assert r.zscore(K.labeled_key("p"), "i0") == 0


def test_a_gold_item_is_served_first_and_teaches_its_expert(r, settings):
    """Before real items of a skill, the qualification gate serves a gold item in place of
    the chosen one; its label is recorded as a check (right or wrong), not aggregated."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    project = get_project(r, "p")
    ingest(r, project, [{"id": "i0", "predictions": {"m": [0.5, 0.5]}, "gold": "a"},
                        {"id": "i1", "predictions": {"m": [0.5, 0.5]}}])
    put_expert(r, "e", {"skills": {}})
    task = tasks.claim(r, project, load_expert(r, "e"), depth=8)
    assert task["item_id"] == "i0" and task["reason"].startswith("gold check")
    status, answer = tasks.submit_label(r, project, task["id"], "b", 1.0)
    assert status == 201 and answer["gold"] is True and answer["aggregated"] is True
    after_label(r, project, answer, settings)
    assert r.hmget(K.expert_skill_key("p", "e"), "gn:_general", "gr:_general") == ["1", None]
    assert r.hget(K.item_key("p", "i0"), "st") == "gold"
    assert tasks.claim(r, project, load_expert(r, "e"), depth=8)["item_id"] == "i1"


def test_a_second_label_is_aggregated_in_python(r, settings):
    """With redundancy 2 the first label is folded, the second is voted by aggregate.py;
    the item joins the labeled set only when finished."""
    answer, project = _labeled_once(r, settings, ["a", "b"], {}, "a", redundancy=2)
    assert answer["aggregated"] is True
    assert r.zscore(K.labeled_key("p"), "i0") is None
    put_expert(r, "f", {"skills": {}})
    task = tasks.claim(r, project, load_expert(r, "f"), depth=8)
    _, second = tasks.submit_label(r, project, task["id"], "a", 1.0)
    assert second["aggregated"] is False
    assert second["item_status"] == "labeled"
    assert r.zscore(K.labeled_key("p"), "i0") is None  # aggregate.py decides it is finished
    after_label(r, project, second, settings)
    assert r.zscore(K.labeled_key("p"), "i0") == 0
    assert _stored(r)[0] == "a"
    assert float(_stored(r)[1]) > 0.9


def test_split_labels_asking_for_more_keep_the_item_out_of_the_labeled_set(r, settings):
    """Two disagreeing labels make adaptive redundancy ask for a third: the item is pending
    again and must not be exported or trained on as finished."""
    create_project(r, {"id": "p", "labels": ["a", "b"], "redundancy": 2,
                       "strategy": {"redundancy": {"adaptive": True, "max_labels": 3,
                                                   "stop_confidence": 0.999}}})
    project = get_project(r, "p")
    ingest(r, project, [{"id": "i0", "predictions": {"m": [0.5, 0.5]}}])
    for eid, given in (("e", "a"), ("f", "b")):
        put_expert(r, eid, {"skills": {}})
        task = tasks.claim(r, project, load_expert(r, eid), depth=8)
        _, answer = tasks.submit_label(r, project, task["id"], given, 1.0)
        after_label(r, project, answer, settings)
    assert r.hmget(K.item_key("p", "i0"), "st", "want") == ["pending", "3"]
    assert r.zscore(K.labeled_key("p"), "i0") is None
