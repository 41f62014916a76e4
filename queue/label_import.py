"""Labels without a lease: labels a platform already has (seed labels, historical labels,
labels made in its own UI), brought in as records of a batch.

Each record is idempotent by its key: (item, expert) when it names an expert (one expert
labels an item once, leased or not), else (item, source record id).  The key fixes the
task id it is recorded under, so a retry of the record finds it and is not counted again.
The records that pass the checks here are recorded in one IMPORT_LABELS script
(``queue/lua.py``), which does a leased label's bookkeeping for each; a bad record is
rejected with the reason and never blocks the rest of its batch.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from dataclasses import dataclass, field

import redis

from taskrank.learning.aggregation import ACCURACY_BOUNDS
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.after_label import maybe_retrain
from taskrank.queue.aggregate import ANONYMOUS_ACCURACY, aggregate_items
from taskrank.queue.clock import now as clock_now
from taskrank.queue.events import items_finished
from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.experts import load_experts
from taskrank.queue.settings import Settings
from taskrank.queue.skills import load_profiles
from taskrank.queue.validation import (
    check_answer,
    check_comment,
    check_id,
    check_keys,
    check_object,
    fail,
)

RECORD_FIELDS = {"item_id", "label", "expert_id", "source", "answered_at", "comment",
                 "answer"}
MAX_SOURCE = 256
# The platform's id of a label: printable ASCII (space to ~), as ids of other systems are.
SOURCE_PATTERN = re.compile(rf"[ -~]{{1,{MAX_SOURCE}}}")
# RFC 3339 date-time (section 5.6) with its time zone; leap seconds are not taken.
DATE_TIME = re.compile(r"(\d{4})-(0[1-9]|1[0-2])-(\d{2})T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
                       r"(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)", re.ASCII)
_WIDTH = 8  # ARGV fields per record of IMPORT_LABELS
REFUSALS = {  # IMPORT_LABELS outcome -> rejection detail ({item}, {expert}, {detail})
    "no_item": "no item '{item}' in this project; ingest it first (POST .../items)",
    "conflict": ("this record's key ({key}) was recorded already with another label, "
                 "comment or answer (label '{detail}'); a recorded label is not changed"),
    "gold_without_expert": ("item '{item}' is a gold item: its label only tests the expert "
                            "who gives it; send expert_id"),
}
WITHDRAWN = "item '{item}' was withdrawn: the label is recorded, not counted"


@dataclass(frozen=True)
class LabelRecord:
    """One record, checked; '' for the optional text fields not given."""

    index: int
    item_id: str
    label: str
    expert_id: str
    source: str
    answered_at: str  # RFC 3339, as sent
    comment: str
    answer: str  # compact JSON

    @property
    def key(self) -> str:
        """What makes a retry of this record the same record."""
        return f"expert {self.expert_id}" if self.expert_id else f"source {self.source}"


@dataclass
class ImportResult:
    """The answer (``counted``, ``duplicates``, ``not_counted``, ``rejected``) and the
    follow-up work (``finish_import``)."""

    answer: dict
    to_aggregate: list[str] = field(default_factory=list)
    since_retrain: int = 0
    counted_items: list[str] = field(default_factory=list)  # for item.finished


def record_task_id(pid: str, record: LabelRecord) -> str:
    """The task id a record is stored under: fixed by its item and key, so a retry finds it
    (the form of a lease's id, ``tasks.new_task_id``)."""
    digest = hashlib.sha256(f"{record.item_id}\n{record.key}".encode()).hexdigest()
    return f"{digest[:20]}.{pid}"


def parse_record(index: int, raw: object, labels: list[str]) -> LabelRecord:
    """One record, checked (raises ``InvalidInputError`` naming the field)."""
    raw = check_object(raw, "record")
    check_keys(raw, "", RECORD_FIELDS, {"item_id", "label"})
    item_id = check_id(raw["item_id"], "item_id")
    if raw["label"] not in labels:
        raise fail("label", f"must be one of the project's labels {labels}"[:300])
    expert_id = raw.get("expert_id")
    expert_id = "" if expert_id is None else check_id(expert_id, "expert_id")
    source = _source(raw.get("source"))
    if not expert_id and not source:
        raise fail("source", "send expert_id or source (the platform's id of this label): "
                             "a record needs one of them so that a retry is not counted twice")
    answered = raw.get("answered_at")
    return LabelRecord(index, item_id, raw["label"], expert_id, source,
                       "" if answered is None else _date_time(answered),
                       check_comment(raw.get("comment")), check_answer(raw.get("answer")))


def _source(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not SOURCE_PATTERN.fullmatch(value):
        raise fail("source", f"must be 1-{MAX_SOURCE} printable ASCII characters (space to "
                             f"~), got {value!r}"[:300])
    return value


def _date_time(value: object) -> str:
    """An RFC 3339 date-time with a time zone, kept as sent."""
    match = DATE_TIME.fullmatch(value) if isinstance(value, str) else None
    if match:
        year, month, day = (int(part) for part in match.groups()[:3])
        if year and 1 <= day <= calendar.monthrange(year, month)[1]:
            return value
    raise fail("answered_at", "must be an RFC 3339 date-time with a time zone, e.g. "
                              f"2025-01-31T12:00:00Z, got {value!r}"[:300])


def parse_records(r: redis.Redis, project: dict,
                  raw_records: list) -> tuple[list[LabelRecord], list[dict], dict[str, dict]]:
    """The records that pass every check made before the script, the rejections
    ``{"index", "id", "detail"}``, and the declared experts they name."""
    records, rejected = [], []
    for index, raw in enumerate(raw_records):
        try:
            records.append(parse_record(index, raw, project["labels"]))
        except InvalidInputError as error:
            rejected.append(_rejection(index, raw, error.detail))
    experts = load_experts(r, sorted({rec.expert_id for rec in records if rec.expert_id}))
    for rec in records:
        if rec.expert_id and experts[rec.expert_id] is None:
            rejected.append(_rejection(rec.index, rec.item_id, (
                f"expert_id: no expert '{rec.expert_id}'; declare it with PUT "
                f"/v1/experts/{rec.expert_id}, or send the label without expert_id")))
    records = [rec for rec in records if not rec.expert_id or experts[rec.expert_id]]
    return records, rejected, {eid: expert for eid, expert in experts.items() if expert}


def _rejection(index: int, raw: object, detail: str) -> dict:
    item_id = raw.get("item_id") if isinstance(raw, dict) else raw
    return {"index": index, "id": item_id if isinstance(item_id, str) else None,
            "detail": detail}


def import_labels(r: redis.Redis, project: dict, raw_records: list,
                  now: float | None = None) -> ImportResult:
    """Record a batch of labels without a lease (``finish_import`` does what follows)."""
    records, rejected, experts = parse_records(r, project, raw_records)
    if not records:
        raise _none_recorded(len(raw_records), rejected)
    pid = project["id"]
    args = [clock_now() if now is None else now, len(project["labels"]), *ACCURACY_BOUNDS,
            json.dumps(_fits(r, project, experts)), ANONYMOUS_ACCURACY, _WIDTH]
    for rec in records:
        args += [record_task_id(pid, rec), rec.item_id, rec.expert_id, rec.label, rec.source,
                 rec.answered_at, rec.comment, rec.answer]
    reply = json.loads(lua.run(r, "import_labels", pid, [
        K.labels_stream_key(pid), K.labeled_key(pid), K.followup_key(pid),
        K.relabeled_key(pid), *_touched_keys(pid, records)], args))
    return _result(records, reply, rejected)


def _touched_keys(pid: str, records: list[LabelRecord]) -> list[str]:
    """The keys the records name, declared to the script: each record's task, its item's
    hash, experts and labels; each expert's leases and per-skill record."""
    keys = [key for rec in records for key in (
        K.task_key(pid, record_task_id(pid, rec)), K.item_key(pid, rec.item_id),
        K.item_experts_key(pid, rec.item_id), K.item_labels_key(pid, rec.item_id))]
    experts = sorted({rec.expert_id for rec in records if rec.expert_id})
    keys += [K.expert_leases_key(pid, eid) for eid in experts]
    keys += [K.expert_skill_key(pid, eid) for eid in experts]
    return list(dict.fromkeys(keys))


def _none_recorded(n: int, rejected: list[dict]) -> InvalidInputError:
    return InvalidInputError(f"none of the {n} label records could be recorded; see "
                             "'rejected' for each reason",
                             rejected=sorted(rejected, key=lambda row: row["index"]))


def _fits(r: redis.Redis, project: dict, experts: dict[str, dict]) -> dict[str, dict]:
    """{expert: {skill: learned accuracy}} ('_general' included) in the project."""
    profiles = load_profiles(r, project, list(experts.values())) if experts else []
    return {profile.expert["id"]: profile.table(profile.posterior.mean)
            for profile in profiles}


def _result(records: list[LabelRecord], reply: dict, rejected: list[dict]) -> ImportResult:
    counted, duplicates, not_counted, to_aggregate, items = 0, 0, [], [], []
    for rec, (outcome, detail) in zip(records, reply["results"], strict=True):
        if outcome == "counted":
            counted += 1
            items.append(rec.item_id)
            if not detail:  # not voted inside the script
                to_aggregate.append(rec.item_id)
        elif outcome == "duplicate":
            duplicates += 1
        elif outcome == "withdrawn":
            not_counted.append({"index": rec.index, "id": rec.item_id,
                                "detail": WITHDRAWN.format(item=rec.item_id)})
        else:
            rejected.append({"index": rec.index, "id": rec.item_id, "detail": REFUSALS[
                outcome].format(item=rec.item_id, key=rec.key, detail=detail)})
    answer = {"counted": counted, "duplicates": duplicates, "not_counted": not_counted,
              "rejected": sorted(rejected, key=lambda row: row["index"])}
    return ImportResult(answer, list(dict.fromkeys(to_aggregate)),
                        int(reply["since_retrain"]), list(dict.fromkeys(items)))


def finish_import(r: redis.Redis, project: dict, result: ImportResult,
                  settings: Settings | None = None) -> None:
    """After a batch: aggregate the items the script did not vote alone, then queue a
    retrain when it is due (as after a leased label; both idempotent).  The script put
    those items on ``keys.followup_key``, so when this fails the workers' upkeep
    (``after_label.drain_followups``) does it."""
    if result.to_aggregate:
        aggregate_items(r, project, result.to_aggregate)
        r.srem(K.followup_key(project["id"]), *result.to_aggregate)
    items_finished(r, project, result.counted_items)  # never raises
    if result.since_retrain:
        maybe_retrain(r, project, result.since_retrain, settings)
