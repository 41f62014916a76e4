"""What the Label Studio ML backend does to the store: its tasks become items, taskrank's
predictions go back with a score that orders Label Studio's queue, its annotations become
labels without a lease, and its "start training" retrains.

The JSON mapping rules are in ``queue/label_studio.py``; the HTTP side in
``server/label_studio.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import redis

from taskrank.queue import keys as K
from taskrank.queue import label_studio as ls
from taskrank.queue.exceptions import InvalidInputError
from taskrank.queue.items import ingest
from taskrank.queue.models import current_ranker
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.scoring import model_inputs, stored_item
from taskrank.queue.settings import Settings

log = logging.getLogger(__name__)

# An annotation's author, Label Studio user N, teaches expert 'ls-user-N' when that expert
# is declared in taskrank; otherwise the label counts without teaching anyone's accuracy.
EXPERT_PREFIX = "ls-user-"
SOURCE_PREFIX = "label-studio:annotation:"


def model_version(r: redis.Redis, project: dict) -> str:
    """The version Label Studio sees (``taskrank-v<model>-s<strategy>``)."""
    version = r.hget(K.model_meta_key(project["id"]), "version")
    return ls.model_version_name(int(version or 0), project["strategy_version"])


def register_tasks(r: redis.Redis, project: dict, tasks: list, settings: Settings) -> dict:
    """Ingest the tasks taskrank does not know yet (known items are left as they are);
    ``{"created", "rejected": [{"index", "id", "detail"}]}``."""
    items, rejected = [], []
    for index, task in enumerate(tasks):
        try:
            items.append((index, ls.task_item(task, project["labels"])))
        except ls.NotUsable as error:
            rejected.append({"index": index, "id": _task_id(task), "detail": str(error)})
    pipe = r.pipeline(transaction=False)
    for _, item in items:
        pipe.exists(K.item_key(project["id"], item["id"]))
    new = [(index, item) for (index, item), known in zip(items, pipe.execute(), strict=True)
           if not known]
    if not new:
        return {"created": 0, "rejected": rejected}
    try:
        result = ingest(r, project, [item for _, item in new], current_ranker(r, project),
                        settings)
    except InvalidInputError as error:  # none could be stored: each task says why
        result = {"created": 0, "rejected": error.extra.get("rejected", [])}
    rejected += [{**entry, "index": new[entry["index"]][0]} for entry in result["rejected"]]
    return {"created": result["created"], "rejected": rejected}


def predict(r: redis.Redis, project: dict, control: ls.ChoicesControl, tasks: list) -> dict:
    """One prediction per task, in order (``{"results": [...]}`` as Label Studio reads it)."""
    version = model_version(r, project)
    ids = [_item_id(task) for task in tasks]
    known = [iid for iid in ids if iid is not None]
    rows = _item_rows(r, project["id"], known)
    proba = _probabilities(r, project, rows)
    results = []
    for iid in ids:
        row = rows.get(iid)
        priority = row["priority"] if row else None
        results.append(ls.ls_prediction(control, proba.get(iid), project["labels"],
                                        priority, version))
    return {"results": results, "model_version": version}


def _item_rows(r: redis.Redis, pid: str, ids: list[str]) -> dict[str, dict]:
    """{id: item hash + its live priority} for the ids that are items."""
    pipe = r.pipeline(transaction=False)
    for iid in ids:
        pipe.hgetall(K.item_key(pid, iid))
    rows = {iid: fields for iid, fields in zip(ids, pipe.execute(), strict=True) if fields}
    pipe = r.pipeline(transaction=False)
    order = list(rows)
    for iid in order:
        tags = rows[iid]["s"].split(",") if rows[iid].get("s") else []
        pipe.zscore(K.pool_keys(pid, tags)[0], iid)
    for iid, live in zip(order, pipe.execute(), strict=True):
        # A pending item's priority is its score in the pool (a re-score moves only that);
        # a leased or labeled one keeps the priority it was claimed at.
        rows[iid]["priority"] = live if live is not None else float(rows[iid].get("pr") or 0)
    return rows


def _probabilities(r: redis.Redis, project: dict, rows: dict[str, dict]) -> dict[str, list]:
    """The class probabilities taskrank gives each item: its trained model's where it can
    score the item, else the mean of the supplied predictions (none: no prediction)."""
    k = len(project["labels"])
    items = [stored_item(iid, fields.get("p"), fields.get("f")) for iid, fields in rows.items()]
    ranker = current_ranker(r, project)
    scored = [item for item in items if ranker is not None and ranker.accepts(item)]
    out: dict[str, list] = {}
    if scored:
        X = model_inputs(scored, ranker.models, ranker.n_features, ranker.n_classes)
        for item, row in zip(scored, ranker.ranker.predict_proba(X).tolist(), strict=True):
            out[item.id] = row
    for item in items:
        if item.id not in out and item.predictions:
            out[item.id] = np.mean(list(item.predictions.values()), axis=0).tolist()
    return {iid: row for iid, row in out.items() if len(row) == k}


def annotation_records(r: redis.Redis, project: dict, action: str,
                       payload: dict) -> tuple[list[dict], list[dict]]:
    """The label records of an ANNOTATION(S)_CREATED/UPDATED event and the annotations left
    out ``{"annotation", "detail"}``; the tasks of the event are registered first."""
    annotations = payload.get("annotation")
    tasks = payload.get("task")
    if action == "ANNOTATIONS_CREATED" or isinstance(annotations, list):
        annotations, tasks = annotations or [], tasks or []
    else:
        annotations, tasks = [annotations], [tasks] if tasks else []
    by_task = {task.get("id"): task for task in tasks if isinstance(task, dict)}
    records, skipped = [], []
    for annotation in annotations:
        if not isinstance(annotation, dict):
            skipped.append({"annotation": None, "detail": "an annotation must be an object"})
            continue
        task = by_task.get(annotation.get("task"), {"id": annotation.get("task")})
        try:
            records.append({"item_id": ls.task_item_id(task),
                            "label": ls.annotation_label(annotation, project["labels"]),
                            "source": f"{SOURCE_PREFIX}{annotation.get('id')}",
                            **_answered_at(annotation),
                            **_author(annotation)})
        except ls.NotUsable as error:
            skipped.append({"annotation": annotation.get("id"), "detail": str(error)})
    _name_experts(r, records)
    return records, skipped


def _answered_at(annotation: dict) -> dict:
    when = annotation.get("updated_at") or annotation.get("created_at")
    return {"answered_at": when} if isinstance(when, str) else {}


def _author(annotation: dict) -> dict:
    user = annotation.get("completed_by")
    if isinstance(user, dict):  # some Label Studio versions expand the user
        user = user.get("id")
    return {"expert_id": f"{EXPERT_PREFIX}{user}"} if isinstance(user, int) else {}


def _name_experts(r: redis.Redis, records: list[dict]) -> None:
    """Keep ``expert_id`` only where that expert is declared in taskrank."""
    named = sorted({rec["expert_id"] for rec in records if "expert_id" in rec})
    pipe = r.pipeline(transaction=False)
    for eid in named:
        pipe.exists(K.expert_key(eid))
    declared = {eid for eid, known in zip(named, pipe.execute(), strict=True) if known}
    for rec in records:
        if rec.get("expert_id", "") not in declared:
            rec.pop("expert_id", None)


def record_labels(r: redis.Redis, project: dict, records: list[dict],
                  settings: Settings) -> dict:
    """Record label records as labels without a lease (``queue/label_import.py``);
    ``{"counted", "duplicates", "not_counted", "rejected"}``."""
    if not records:
        return {"counted": 0, "duplicates": 0, "not_counted": [], "rejected": []}
    from taskrank.queue.label_import import finish_import, import_labels

    try:
        result = import_labels(r, project, records)
    except InvalidInputError as error:  # none of them could be recorded
        return {"counted": 0, "duplicates": 0, "not_counted": [],
                "rejected": error.extra.get("rejected", [])}
    finish_import(r, project, result, settings)
    for entry in result.answer["rejected"]:
        log.warning("label studio annotation on item %s of project %s not recorded: %s",
                    entry["id"], project["id"], entry["detail"])
    return result.answer


def start_training(r: redis.Redis, settings: Settings, project: dict) -> dict:
    """START_TRAINING: a retrain now (merged with one already waiting)."""
    return {"job_id": enqueue_retrain(r, settings, project["id"])}


def _item_id(task: object) -> str | None:
    try:
        return ls.task_item_id(task) if isinstance(task, dict) else None
    except ls.NotUsable:
        return None


def _task_id(task: object) -> str | None:
    task_id = task.get("id") if isinstance(task, dict) else None
    return None if task_id is None else str(task_id)
