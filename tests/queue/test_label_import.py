"""Labels without a lease in queue/: record checks, the task id a record's key fixes, a
retry that re-runs the follow-up, and labels without an expert in Dawid-Skene."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue.after_label import drain_followups
from taskrank.queue.aggregate import reaggregate_project
from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.experts import put_expert
from taskrank.queue.items import ingest
from taskrank.queue.label_import import (
    finish_import,
    import_labels,
    parse_record,
    record_task_id,
)
from taskrank.queue.projects import create_project, get_project
from tests.cluster import both_backends
from tests.invariants import check_store

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

LABELS = ["neg", "pos"]


@pytest.fixture
def project(r):
    create_project(r, {"id": "p", "labels": LABELS, "redundancy": 2})
    ingest(r, get_project(r, "p"), [{"id": f"i{n}", "predictions": {"m": [0.5, 0.5]}}
                                    for n in range(6)])
    for eid in ("e1", "e2"):
        put_expert(r, eid, {"skills": {}})
    return get_project(r, "p")


def test_a_records_key_fixes_its_task_id():
    """(item, expert) when an expert is named, else (item, source): the label, comment and
    answer do not change the id, so a retry lands on the same task."""
    def tid(**fields):
        return record_task_id("p", parse_record(0, {"item_id": "i0", "label": "pos", **fields},
                                                LABELS))

    assert tid(expert_id="e1") == tid(expert_id="e1", source="s", comment="c") != tid(
        source="s")
    assert tid(expert_id="e1") != tid(expert_id="e2")
    assert tid(source="s") == tid(source="s", answer={"x": 1})
    token, _, pid = tid(source="s").partition(".")
    assert pid == "p" and len(token) == 20


@pytest.mark.parametrize("fields, field", [
    ({"label": "pos"}, "item_id"),
    ({"item_id": "i0"}, "label"),
    ({"item_id": "../x", "label": "pos", "source": "s"}, "item_id"),
    ({"item_id": "i0", "label": "pos", "expert_id": "e 1"}, "expert_id"),
    ({"item_id": "i0", "label": "pos", "source": ""}, "source"),
    ({"item_id": "i0", "label": "pos", "source": "a\nb"}, "source"),
    ({"item_id": "i0", "label": "pos", "source": "café"}, "source"),
    ({"item_id": "i0", "label": "pos", "source": "s", "answered_at": "2025-02-30T12:00:00Z"},
     "answered_at"),
    ({"item_id": "i0", "label": "pos", "source": "s", "answered_at": "0000-01-01T12:00:00Z"},
     "answered_at"),
    ({"item_id": "i0", "label": "pos", "source": "s", "answered_at": "2025-01-31t12:00:00z"},
     "answered_at"),
    ({"item_id": "i0", "label": "pos", "source": "s" * 257}, "source"),
    ({"item_id": "i0", "label": "pos", "source": "s", "answered_at": "2025-01-31T12:00:00"},
     "answered_at"),
    ({"item_id": "i0", "label": "pos", "source": "s", "answered_at": 1738324800}, "answered_at"),
    ({"item_id": "i0", "label": "pos", "source": "s", "comment": "\ud800"}, "comment"),
    ({"item_id": "i0", "label": "pos", "source": "s", "seconds_spent": 3}, "seconds_spent"),
])
def test_a_bad_record_names_its_field(fields, field):
    """Each check fails with the field it is about at the start of the reason."""
    with pytest.raises(InvalidInputError) as caught:
        parse_record(0, fields, LABELS)
    assert caught.value.detail.startswith(f"{field}:"), caught.value.detail


def test_the_upkeep_does_the_follow_up_a_failed_request_skipped(r, project):
    """The follow-up (aggregation, the labeled set) missed after the script wrote: the item
    waits in the follow-up set, a retry of the batch counts nothing more, and the workers'
    upkeep finishes it; a follow-up that ran leaves nothing waiting."""
    records = [{"item_id": "i0", "label": "pos", "expert_id": "e1"},
               {"item_id": "i0", "label": "pos", "expert_id": "e2"}]
    first = import_labels(r, project, records)
    assert first.to_aggregate == ["i0"]  # two votes: aggregate.py decides; here it dies
    assert r.smembers(K.followup_key("p")) == {"i0"}
    assert r.zscore(K.labeled_key("p"), "i0") is None
    retry = import_labels(r, project, records)
    assert retry.answer["duplicates"] == 2 and retry.to_aggregate == []
    assert drain_followups(r) == 1
    assert r.zscore(K.labeled_key("p"), "i0") is not None
    assert r.hmget(K.item_key("p", "i0"), "st", "al") == ["labeled", "pos"]
    assert not r.exists(K.followup_key("p"))
    done = import_labels(r, project, [{"item_id": "i1", "label": "neg", "source": "a"},
                                      {"item_id": "i1", "label": "neg", "source": "b"}])
    finish_import(r, project, done)
    assert not r.exists(K.followup_key("p")) and r.zscore(K.labeled_key("p"), "i1") == 0
    check_store(r, "p")


def test_labels_without_an_expert_join_dawid_skene_and_teach_no_one(r, project):
    """Re-aggregation weighs labels without an expert at ANONYMOUS_ACCURACY beside the
    experts' and feeds back only the experts' accuracies."""
    records = []
    for n in range(6):
        records.append({"item_id": f"i{n}", "label": "pos", "expert_id": "e1"})
        second = {"label": "pos" if n < 4 else "neg"}
        second.update({"expert_id": "e2"} if n % 2 else {"source": f"s{n}"})
        records.append({"item_id": f"i{n}", **second})
    result = import_labels(r, project, records)
    finish_import(r, project, result)
    assert result.answer["counted"] == 12 and r.zcard(K.labeled_key("p")) == 6
    before = r.hgetall(K.expert_skill_key("p", "e1"))
    assert reaggregate_project(r, project)["items"] == 6
    after = r.hgetall(K.expert_skill_key("p", "e1"))
    assert after != before and float(after["a:_general"]) > float(after["d:_general"])
    assert sorted(r.scan_iter(match=K.expert_skill_prefix("p") + "*")) == [
        K.expert_skill_key("p", "e1"), K.expert_skill_key("p", "e2")]
    check_store(r, "p")
