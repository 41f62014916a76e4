"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

The document is data: the schemas and one entry per operation below.  The role each
operation needs is read from its view (``require`` sets ``required_role``), so the document
cannot drift from what the server enforces; tests check that every route is documented.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app

from taskrank.learning.priority import DEFAULT_STRATEGY_DICT, MAX_WEIGHT
from taskrank.queue.items import MAX_MODELS, MAX_SKILLS, SUM_TOLERANCE
from taskrank.queue.label_import import MAX_SOURCE
from taskrank.queue.labels import (
    AGGREGATED_CURSOR_FORMAT,
    LOG_CURSOR,
    LOG_CURSOR_FORMAT,
)
from taskrank.queue.projects import MAX_BUDGET_USD, MAX_LABELS
from taskrank.queue.tasks import MAX_TASKS_PER_CLAIM, NO_TASK_REASONS
from taskrank.queue.validation import MAX_ANSWER_BYTES, MAX_COMMENT_BYTES, MAX_JOB_ID
from taskrank.queue.webhooks import EVENTS, MAX_URL, PLAIN_SECRET
from taskrank.server.context import settings
from taskrank.server.tasks import REASON_DETAIL_HEADER, REASON_HEADER

bp = Blueprint("openapi", __name__)

ROLES_NOTE = "Roles nest: expert < platform < admin."


# --- schema helpers -------------------------------------------------------------------------
def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple = (), closed: bool = False, **properties: dict) -> dict:
    """An object schema; ``closed`` where the server refuses unknown fields."""
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def num(low: float | None = None, high: float | None = None, kind: str = "number") -> dict:
    schema: dict = {"type": kind}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


def integer(low: int | None = None, high: int | None = None) -> dict:
    return num(low, high, "integer")


def array(items: dict, **bounds: object) -> dict:
    return {"type": "array", "items": items, **bounds}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def doc(schema: dict, description: str) -> dict:
    return {**schema, "description": description}


ID = {"type": "string", "pattern": "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,128}$"}
# '<token>.<project id>' (server/tasks.py checks both parts); RQ's alphabet for job ids,
# which hold the project id in hex and so run longer than an id.
TASK_ID = {"type": "string",
           "pattern": "^[A-Za-z0-9_-]{1,128}[.](?!\\.{1,2}$)[A-Za-z0-9._-]{1,128}$"}
JOB_ID = {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{1,{MAX_JOB_ID}}}$"}
TIME = {"type": "string", "format": "date-time"}
TEXT, BOOL, ANY = {"type": "string"}, {"type": "boolean"}, {}
# 'gold': an item with a known answer, served only as a check of experts, never pooled
# 'withdrawn': taken out for good by DELETE /v1/projects/{pid}/items/{iid}
STATUS = {"type": "string", "enum": ["pending", "leased", "labeled", "gold", "withdrawn"]}
COMMENT = doc({"type": "string", "maxLength": MAX_COMMENT_BYTES},
              f"free text, at most {MAX_COMMENT_BYTES} bytes of UTF-8 (10 KB); stored and "
              "exported with the label")
ANSWER = doc({}, f"any JSON (a corrected model output, rubric scores, a rationale), at most "
                 f"{MAX_ANSWER_BYTES} bytes as compact JSON (64 KB), its numbers within the "
                 "float range; stored and exported with the label")
TASK_STATE = {"type": "string", "enum": ["open", "labeled", "released", "expired",
                                         "withdrawn"],
              "description": "withdrawn: the lease ended because its item was withdrawn"}
BUDGET = doc(nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BUDGET_USD}),
             "US dollars the project's labels may cost; no task is served past it (null: "
             "no budget)")
MAX_HOURS = doc(nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 24}),
                "hours of counted labels per UTC day, across projects; once reached, "
                "tasks/next answers 204 daily_hours_reached (null: no limit)")
SPENT = obj(("usd", "hours", "labels"), usd=num(0), hours=num(0), labels=integer(0))


def strategy(partial: bool) -> dict:
    """The acquisition strategy (DESIGN §4): every section closed; ``partial`` for requests,
    which are merged onto the defaults and validated as a whole."""
    sections = {
        "uncertainty": {"type": "string", "enum": ["entropy", "least_confidence", "margin"]},
        "disagreement": {"type": "string", "enum": ["consensus_kl", "vote_entropy"]},
        "weights": {"uncertainty": num(0, MAX_WEIGHT), "disagreement": num(0, MAX_WEIGHT),
                    "density": num(0, MAX_WEIGHT)},
        "committee": {"model": {"type": "string", "enum": [
            "logistic_regression", "naive_bayes", "random_forest"]},
            "members": integer(1, 100), "use_supplied": BOOL},
        "retrain": {"every_labels": integer(1, 1_000_000), "min_labels": integer(1, 1_000_000),
                    "max_train_items": doc(integer(100, 10_000_000), (
                        "labeled items a retrain (and its cross-validation) trains on at "
                        "most: all of them up to there; beyond, the labels new since the "
                        "last retrain and a uniform sample of the older ones (min_labels "
                        "when that is more)")),
                    "min_interval_seconds": num(0, 86_400)},
        "redundancy": {"adaptive": BOOL, "max_labels": integer(1, 50),
                       "stop_confidence": {"type": "number", "exclusiveMinimum": 0,
                                           "maximum": 1}},
        "routing": {"fit_exponent": num(0, 10), "cost_exponent": num(0, 10),
                    "holdback_seconds": num(0, 3600), "holdback_margin": num(0, 1)},
        "density": {"sample_size": integer(1, 10_000)},
        "coverage": {"clusters": integer(1, 1024), "sample_size": integer(10, 100_000),
                     "refit_growth": num(0.01, 1000)},
        "explore": {"share": num(0, 1), "decay_labels": integer(1, 1_000_000)},
        "diversity": {"factor": num(0, 1)},
        "qa": {"gold_rate": num(0, 1), "review_rate": num(0, 1),
               "qualify": obj(() if partial else ("min_gold", "min_accuracy"), True,
                              min_gold=integer(0, 1000), min_accuracy=num(0, 1))},
    }
    properties = {}
    for name, section in sections.items():
        if "type" in section:
            properties[name] = section
        else:
            properties[name] = obj(() if partial else tuple(section), True, **section)
    properties["weights"] |= some_weight_positive(partial)
    schema = obj(() if partial else tuple(properties), True, **properties)
    schema["description"] = ("A partial strategy merged onto the defaults; an unknown key is "
                             "a 422 naming it." if partial else "The project's full strategy.")
    return schema


def some_weight_positive(partial: bool) -> dict:
    """The rule that not every weight is 0 (the priority would rank nothing).  A partial
    strategy is merged onto the defaults, so a weight it leaves out keeps its default."""
    defaults = DEFAULT_STRATEGY_DICT["weights"]
    choices = [{"required": [name], "properties": {name: {"exclusiveMinimum": 0}}}
               for name in defaults]
    if partial:
        choices += [{"not": {"required": [name]}} for name, value in defaults.items()
                    if value > 0]
    return {"anyOf": choices, "description": "at least one weight is positive" + (
        " once merged onto the defaults " + ", ".join(
            f"{name} {value:g}" for name, value in defaults.items()) if partial else "")}


def skill_quality() -> dict:
    """One (project, skill) of an expert's quality report (``queue/skills.py``)."""
    share = nullable(num(0, 1))
    schema = obj(
        ("labels", "gold_answered", "gold_accuracy", "agreement", "accuracy",
         "accuracy_interval", "hours", "dollars", "predicted_seconds", "status"),
        labels=doc(integer(0), "counted labels"),
        gold_answered=doc(integer(0), "gold items answered (checks, not counted labels)"),
        gold_accuracy=doc(share, "share of gold items answered right (null: none yet)"),
        agreement=doc(share, "share of its labels' worth that agreed with the aggregated "
                             "label (Dawid-Skene over items with several labels; null: "
                             "none yet)"),
        accuracy=doc(num(0, 1), "learned accuracy: the Beta posterior's mean, from the "
                                "declared level, gold answers and agreement"),
        accuracy_interval=doc(array(num(0, 1), minItems=2, maxItems=2),
                              "its 90 % credible interval [low, high]"),
        hours=num(0), dollars=num(0),
        predicted_seconds=doc(num(0), "predicted seconds of its next label"),
        status=doc({"type": "string", "enum": ["qualified", "qualifying", "flagged"]},
                   "the qualification gate (strategy.qa.qualify): qualifying while it "
                   "answers gold items before real ones (its first min_gold, more while "
                   "they fail min_accuracy; at redundancy 1 only), flagged when its gold "
                   "answers or learned accuracy fall below min_accuracy (no real items of "
                   "the skill)"),
        reason=doc(TEXT, "why it is not qualified, with the numbers"))
    # A verdict other than qualified always says why.
    return {**schema, "if": {"properties": {"status": {"const": "qualified"}}},
            "else": {"required": ["reason"]}}


def schemas(max_items: int) -> dict:
    timed = {"created_at": TIME, "updated_at": TIME}
    project = obj(("id", "labels", "redundancy", "lease_seconds", "strategy",
                   "strategy_version"),
                  id=ID, labels=array(TEXT), redundancy=integer(1, 50),
                  lease_seconds=integer(10, 604800), strategy=ref("Strategy"),
                  strategy_version=integer(1), models=array(TEXT),
                  n_features=nullable(integer(1)), budget_usd=BUDGET, **timed,
                  strategy_history=array(obj(version=integer(1), strategy=ref("Strategy"),
                                             replaced_at=TIME)),
                  backfill_job_id=doc(TEXT, "PATCH only: the re-score run a strategy "
                                            "change started (GET /v1/jobs/{jid})"))
    probabilities = array(num(0, 1 + SUM_TOLERANCE), minItems=2,
                          description="one probability per project label (as many as the "
                                      "project's labels), in label order; summing to 1 "
                                      f"within {SUM_TOLERANCE} (then renormalised)")
    item_view = obj(("id", "status", "priority", "breakdown"),
                    id=ID, status=STATUS, priority=num(), skills=array(ID),
                    breakdown={"type": "object", "additionalProperties": obj(
                        value=num(), weight=num()),
                        "description": "each term of the priority: value and weight"},
                    labels_wanted=integer(1), labels_out=integer(0), labels_done=integer(0),
                    model_version=integer(0), payload=ANY,
                    aggregated=obj(label=TEXT, confidence=num(0, 1)),
                    predictions={"type": "object", "additionalProperties": array(num(0))},
                    labels=array(obj(expert_id=doc(nullable(ID), "null: a label without a "
                                                                 "lease that named no expert"),
                                     label=TEXT)),
                    withdrawn_at=doc(TIME, "when the item was withdrawn"))
    label_answer = obj(("task_id", "item_id", "expert_id", "label", "counted"),
                       task_id=TEXT, item_id=ID, expert_id=ID, label=TEXT, counted=BOOL,
                       item_status=nullable(STATUS), n_labels=nullable(integer(0)))
    part = obj(("status",), status={"type": "string", "enum": ["ok", "down", "unknown"]},
               detail=TEXT)
    return {
        "Problem": obj(("type", "title", "status", "detail"),
                       type=TEXT, title=TEXT, status=integer(400, 599), detail=TEXT,
                       instance=TEXT,
                       errors=array(obj(field=TEXT, detail=TEXT)),
                       rejected=array(ref("Rejection"))),
        "Strategy": strategy(partial=False),
        "StrategyPatch": strategy(partial=True),
        "ProjectCreate": obj(("id", "labels"), True, id=ID,
                             labels=array({"type": "string", "minLength": 1, "maxLength": 200},
                                          minItems=2, maxItems=MAX_LABELS, uniqueItems=True),
                             redundancy=integer(1, 50), lease_seconds=integer(10, 604800),
                             strategy=ref("StrategyPatch"), budget_usd=BUDGET),
        "ProjectPatch": obj((), True, redundancy=integer(1, 50),
                            lease_seconds=integer(10, 604800), strategy=ref("StrategyPatch"),
                            budget_usd=BUDGET),
        "Project": project,
        "ProjectList": obj(("projects",), projects=array(ref("Project"))),
        "Item": {**obj(("id",), True, id=ID,
                       predictions=doc(nullable({
                           "type": "object", "maxProperties": MAX_MODELS, "propertyNames": ID,
                           "additionalProperties": probabilities}),
                           "model name -> probabilities (null or {}: none)"),
                       features=doc(nullable(array(num(-1e12, 1e12), minItems=1,
                                                   maxItems=4096)),
                                    "fixed length per project: the length of its first "
                                    "item with features (the project's n_features); an "
                                    "item of another length is rejected (null: none)"),
                       skills=array(ID, maxItems=MAX_SKILLS),
                       payload=doc(ANY, "opaque JSON returned with the task; its numbers "
                                        "within the float range (magnitude at most "
                                        "1.7976931348623157e308: 1e400 is rejected)"),
                       boost=num(-1e6, 1e6),
                       gold=doc(nullable(TEXT), "one of the project's labels (null: none)")),
                 "anyOf": [{"required": ["predictions"], "properties": {"predictions": {
                               "type": "object", "minProperties": 1}}},
                           {"required": ["features"], "properties": {"features": {
                               "type": "array"}}}],
                 "description": "An item needs predictions of at least one model, or "
                                "features, or both."},
        "ItemBatch": doc(obj(("items",), True,
                             items=array(ref("Item"), minItems=1, maxItems=max_items)),
                         "Each item is checked on its own: an item the project refuses "
                         "(not an Item, probabilities that do not fit its labels, features "
                         "of another length, a gold label not among its labels) is listed "
                         "in `rejected` and the others are stored; when none can be, the "
                         "answer is a 422 carrying `rejected`."),
        "Rejection": obj(("index", "id", "detail"), index=integer(0), id=nullable(TEXT),
                         detail=TEXT),
        "IngestResult": obj(("created", "updated", "rejected"), created=integer(0),
                            updated=integer(0), rejected=array(ref("Rejection"))),
        "ItemView": item_view,
        "Queue": obj(("items",), items=array(ref("ItemView"))),
        "ExpertPut": obj((), True,
                         skills={"type": "object", "maxProperties": 256, "propertyNames": ID,
                                 "additionalProperties": num(0, 1)},
                         capacity=integer(1, 10_000), cost_per_hour=num(0.01, 1e6),
                         active=BOOL, max_hours_per_day=MAX_HOURS),
        "Expert": obj(("id", "skills", "capacity", "cost_per_hour", "active",
                       "open_leases", "quality", "flagged"),
                      id=ID, skills={"type": "object", "additionalProperties": num(0, 1)},
                      capacity=integer(1), cost_per_hour=num(0), active=BOOL,
                      max_hours_per_day=MAX_HOURS,
                      created_at=TIME, updated_at=TIME,
                      open_leases=integer(0),
                      open_leases_by_project={"type": "object",
                                              "additionalProperties": integer(1)},
                      quality=doc({"type": "object", "additionalProperties": {
                          "type": "object", "additionalProperties": ref("SkillQuality")}},
                          "by project id, then skill tag (_general: untagged items): what "
                          "the project learned of the expert; only projects and skills "
                          "with a label, a gold answer or agreement evidence"),
                      flagged=doc(array(ref("FlaggedSkill")),
                                  "every skill the qualification gate flagged: no real "
                                  "items of it")),
        "SkillQuality": skill_quality(),
        "FlaggedSkill": obj(("project_id", "skill", "reason"), project_id=ID, skill=TEXT,
                            reason=TEXT),
        "NextTaskRequest": doc(obj(
            ("expert_id",), True,
            expert_id=doc(ID, "the expert to lease for; an expert token may only name itself"),
            n=doc(nullable(integer(1, MAX_TASKS_PER_CLAIM)), (
                "lease up to n tasks in one atomic claim, within the expert's capacity, and "
                "answer {\"tasks\": [...]}; absent or null: one task, answered "
                "{\"task\": {...}}"))),
            "An expert token may also send no body (or {}): it acts for itself. With a "
            "platform or admin token, expert_id is required (422 without it)."),
        "NextTask": {"oneOf": [ref("Lease"), ref("LeaseBatch")]},
        "Lease": obj(("task",), task=ref("LeasedTask")),
        "LeaseBatch": doc(obj(("tasks",), tasks=array(ref("LeasedTask"), minItems=1,
                                                      maxItems=MAX_TASKS_PER_CLAIM)),
                          "with n: the tasks leased, best first (fewer than n when the "
                          "headers Taskrank-Reason and Taskrank-Reason-Detail say why)"),
        "LeasedTask": obj(
            ("id", "item_id", "priority", "fit", "value", "expires_at", "reason"),
            id=TEXT, item_id=ID, payload=ANY, priority=num(), fit=num(0, 1), value=num(),
            expires_at=TIME, reason=TEXT,
            exploration=doc(BOOL, "true when the item was drawn uniformly from the pool "
                                  "(strategy.explore), not picked by its priority")),
        "LabelRequest": obj(("label",), True, label=doc(
            {"type": "string", "minLength": 1, "maxLength": 200},
            "one of the project's labels (GET /v1/projects/{pid}: labels); another is a 422"),
            seconds_spent=num(0, 604800), comment=nullable(COMMENT), answer=ANSWER),
        "LabelAnswer": label_answer,
        "TaskView": obj(("task",), task=obj(
            ("id", "project_id", "item_id", "expert_id", "state", "expires_at"),
            id=TEXT, project_id=ID, item_id=ID, expert_id=ID, state=TASK_STATE,
            expires_at=TIME, created_at=TIME)),
        "LabelPage": obj(("labels", "next_cursor"), next_cursor=nullable(TEXT), labels=array({
            "oneOf": [obj(("task_id", "item_id", "expert_id", "label", "seconds_spent",
                           "counted", "created_at"),
                          task_id=TEXT, item_id=ID, label=TEXT,
                          expert_id=doc(nullable(ID), "null: a label without a lease that "
                                                      "named no expert"),
                          seconds_spent=num(0), counted=BOOL, created_at=TIME, cursor=TEXT,
                          comment=COMMENT, answer=ANSWER,
                          leaseless=doc({"const": True}, "present on a label posted "
                                                         "without a lease"),
                          source=doc(TEXT, "without a lease: the platform's id of the "
                                           "label, when given"),
                          answered_at=doc(TIME, "without a lease: when it was answered, "
                                                "as sent")),
                      doc(obj(("item_id", "label", "confidence", "n_labels"), True,
                              item_id=ID, label=TEXT, confidence=num(0, 1),
                              n_labels=integer(0)), "with aggregated=true")]})),
        "Stats": obj(("project_id", "items", "open_leases", "labels"),
                     project_id=ID, open_leases=integer(0),
                     items=obj(("total", "pending", "leased", "labeled", "gold"),
                               total=integer(0), pending=integer(0), leased=integer(0),
                               labeled=integer(0), gold=integer(0), withdrawn=integer(0)),
                     labels=obj(("counted", "late", "last_hour"), counted=integer(0),
                                late=integer(0), last_hour=integer(0)),
                     model_version=nullable(integer(1)), strategy_version=integer(1)),
        "Spend": obj(
            ("budget_usd", "spent_usd", "reserved_usd", "remaining_usd", "labels", "hours",
             "by_expert", "by_skill", "by_day"),
            budget_usd=BUDGET,
            spent_usd=doc(num(0), "rate x seconds of every label recorded, counted or late"),
            reserved_usd=doc(num(0), "predicted cost of the open leases"),
            remaining_usd=doc(nullable(num()), "budget - spent - reserved (negative when "
                                               "labels cost more than predicted; null "
                                               "without a budget)"),
            labels=integer(0), hours=num(0),
            by_expert={"type": "object", "additionalProperties": SPENT},
            by_skill=doc({"type": "object", "additionalProperties": SPENT},
                         "by the item's skill tags (_general: none); an item requiring "
                         "several skills counts under each"),
            by_day=doc({"type": "object", "additionalProperties": SPENT},
                       "by UTC day of the label, YYYY-MM-DD")),
        "ModelInfo": obj(("version", "n_labels", "trained_at", "metrics", "metrics_basis",
                          "exploration"),
                         version=nullable(integer(1)), n_labels=integer(0),
                         trained_at=nullable(TIME), metrics=doc({"type": "object"}, (
                             "cross-validation of the current version on all labels "
                             "(accuracy, log_loss, folds, n): biased, see metrics_basis")),
                         metrics_basis=doc(TEXT, "what metrics measures and its bias"),
                         exploration=ref("Exploration"),
                         model=nullable(TEXT), strategy_version=integer(0),
                         versions_kept=array(integer(1)), rescore_job_id=nullable(doc(
                             TEXT, "the re-score run applying this version to the queue "
                             "(GET /v1/jobs/{id}: reranked once its top is done, finished "
                             "once the whole pool is)")),
                         reranked=doc(BOOL, "whether that run re-ranked the queue: the top "
                                            "of every pool set has this version's scores")),
        "Exploration": doc(obj(
            ("accuracy", "std_error", "n", "window", "versions", "mean_n_labels", "basis"),
            accuracy=nullable(num(0, 1)), std_error=nullable(num(0, 1)),
            n=doc(integer(0), "exploration labels pooled (0 before any was scored)"),
            window=doc(integer(1), "labels pooled: the newest batches until they hold this "
                                   "many"),
            versions=doc(array(integer(1)), "the model versions those labels scored"),
            mean_n_labels=nullable(doc(num(0), "labels those versions were trained on, "
                                               "averaged over the pooled labels")),
            basis=TEXT), "Unbiased accuracy: the model versions in use scored on exploration "
                         "items (drawn uniformly from the pending pool) labeled after they "
                         "were trained; std_error is Agresti-Coull: sqrt(q(1-q)/(n+4)), "
                         "q = (right+2)/(n+4)"),
        "JobAccepted": obj(("job_id",), job_id=TEXT),
        "Job": obj(("id", "status", "progress"), id=TEXT, progress=num(0, 1), result=doc(
                       ANY, "the job's return value; of a re-score run its progress: chunks, "
                            "chunks_done, items, items_done, reranked (its top is done: the "
                            "queue is re-ranked), finished, window_stale, superseded_by (a "
                            "newer run that re-scores what its tail had left), reason"),
                   status=doc(TEXT, "RQ's names: queued, started, finished, failed, ...; a "
                                    "re-score run is started until its whole pool is "
                                    "re-scored (or superseded)"),
                   error=nullable(TEXT), retries_left=nullable(integer(0))),
        "Health": obj(("status",), status=TEXT),
        "Readiness": obj(("status", "parts"), status={"type": "string", "enum": [
            "ready", "degraded"]}, parts=ref("ReadinessParts")),
        "ReadinessParts": doc(obj(
            ("redis", "workers"), redis=part, workers=part | {"properties": {
                **part["properties"], "running": doc(integer(0), "RQ workers alive")}}),
            "how each part is: redis (down: nothing can be served; on a Redis Cluster every "
            "master is asked), workers (down: no RQ worker alive, or RQ's Redis unreachable; "
            "labels are taken, retrains and re-scores wait)"),
        **lifecycle_schemas(max_items),
        **label_studio_schemas(),
        **webhook_schemas(),
    }


def lifecycle_schemas(max_items: int) -> dict:
    """Labels without a lease, withdrawal and an expert's open tasks."""
    source = {"type": "string", "pattern": f"^[ -~]{{1,{MAX_SOURCE}}}$"}
    record = obj(("item_id", "label"), True, item_id=doc(ID, "an item of the project (else "
                                                              "the record is rejected)"),
                 label=doc({"type": "string", "minLength": 1, "maxLength": 200},
                           "one of the project's labels (GET /v1/projects/{pid}: labels); "
                           "another rejects the record"),
                 expert_id=doc(nullable(ID), "a declared expert (else the record is "
                                             "rejected): the label teaches its accuracy, and "
                                             "is idempotent by (item, expert)"),
                 source=doc(nullable(source), "the platform's id of this label (printable "
                                              "ASCII): without expert_id, the record is "
                                              "idempotent by (item, source)"),
                 answered_at=doc(nullable(TIME), "when it was answered (RFC 3339 with a time "
                                                 "zone); exported as sent"),
                 comment=nullable(COMMENT), answer=ANSWER)
    not_counted = obj(("index", "id", "detail"), index=integer(0), id=ID, detail=TEXT)
    return {
        "LabelRecord": {**record, "anyOf": [
            {"required": ["expert_id"], "properties": {"expert_id": ID}},
            {"required": ["source"], "properties": {"source": source}}]},
        "LabelBatch": obj(("labels",), True,
                          labels=array(ref("LabelRecord"), minItems=1, maxItems=max_items)),
        "LabelImport": obj(
            ("counted", "duplicates", "not_counted", "rejected"),
            counted=doc(integer(0), "records counted now"),
            duplicates=doc(integer(0), "records recorded before (a retry): not counted "
                                       "again"),
            not_counted=doc(array(not_counted), "recorded, not counted (a withdrawn item)"),
            rejected=doc(array(ref("Rejection")), "not recorded, with the reason")),
        "ItemWithdrawal": {"allOf": [ref("ItemView"), obj(
            ("withdrawn", "ended_tasks"),
            withdrawn=doc(BOOL, "false when it was withdrawn before"),
            ended_tasks=doc(array(TEXT), "the open leases this withdrawal ended"))]},
        "ExpertTasks": obj(("tasks",), tasks=array(obj(
            ("id", "project_id", "item_id", "expert_id", "state", "expires_at"),
            id=TEXT, project_id=ID, item_id=ID, expert_id=ID, state={"const": "open"},
            expires_at=TIME, created_at=TIME, payload=ANY))),
    }


def label_studio_schemas() -> dict:
    """Label Studio's ML backend messages (its ``label_studio_ml`` SDK), as taskrank reads
    and answers them; open objects, since Label Studio sends more than taskrank reads."""
    task = doc(obj(("data",), id=integer(), data=doc(obj(
        taskrank_id=doc(ID, "the item id (default: the task id)"),
        features=doc(array(num()), "the item's features")), "the task's data: the item's "
        "payload"), predictions=array(obj(model_version=TEXT, score=num(0, 1), result=array(
            ANY)))), "a Label Studio task; its data.taskrank_id (else its id) is the item id")
    version = doc(TEXT, "taskrank-v<model version>-s<strategy version>")
    return {
        "LsHealth": obj(("status", "model_class"), status=TEXT, model_class=TEXT,
                        model_version=version),
        "LsSetup": obj(("project", "schema"), project=doc(TEXT, "'<id>.<created epoch>'"),
                       schema=doc(TEXT, "the labeling config: a <Choices> tag whose values "
                                        "are the project's labels"),
                       hostname=TEXT, access_token=TEXT, extra_params=ANY),
        "LsSetupAnswer": obj(("model_version",), model_version=version),
        "LsPredict": obj(("tasks", "label_config"), tasks=array(task), label_config=TEXT,
                         project=TEXT, model_version=nullable(TEXT), params=ANY),
        "LsPredictions": obj(("results",), model_version=version, results=array(obj(
            ("result", "score", "model_version"), model_version=version,
            result=doc(array(ANY), "the likeliest label as a choices result (empty when "
                                   "taskrank has no probabilities for the item)"),
            score=doc(nullable(num()), "1 - priority: Label Studio labels the lowest first "
                                       "(null: not an item)")))),
        "LsWebhook": obj(("action",), action=doc(TEXT, "ANNOTATION_CREATED, "
                         "ANNOTATIONS_CREATED, ANNOTATION_UPDATED (labels without a lease), "
                         "ANNOTATION(S)_DELETED (acknowledged, labels stay), START_TRAINING "
                         "(retrain), TASKS_CREATED (items); others are acknowledged"),
                         annotation=ANY, task=ANY, tasks=ANY, project=ANY),
        "LsWebhookAnswer": obj(("status",), status=TEXT, result=ANY),
    }


EVENT = {"type": "string", "enum": list(EVENTS)}
STATUS_CODE = integer(100, 599)


def webhook_schemas() -> dict:
    """Subscriptions, deliveries and the payload of each event (``webhooks`` below)."""
    secret = doc({"type": "string", "minLength": PLAIN_SECRET[0], "maxLength": PLAIN_SECRET[1]},
                 "never shown again: 'whsec_' + base64 of 24 to 64 random bytes (Standard "
                 "Webhooks: deliveries are signed with the decoded bytes), or a plain string "
                 "of 24 to 128 characters (signed with its UTF-8 bytes)")
    return {
        "WebhookPut": obj(("url", "events", "secret"), True,
                          url=doc({"type": "string", "maxLength": MAX_URL,
                                   "pattern": "^https?://[^/?#\\s]+"},
                                  "http:// or https:// URL the events are POSTed to"),
                          events=array(EVENT, minItems=1, uniqueItems=True), secret=secret),
        "Webhook": obj(("name", "url", "events", "secret_hint", "created_at", "updated_at"),
                       name=ID, url=TEXT, events=array(EVENT), created_at=TIME,
                       updated_at=TIME, secret_hint=doc(TEXT, "the secret's last 4 "
                                                               "characters (and its prefix)")),
        "WebhookList": obj(("webhooks",), webhooks=array(ref("Webhook"))),
        "Delivery": obj(
            ("id", "event", "status", "attempts", "last_status_code", "last_error",
             "created_at", "last_attempt_at", "next_attempt_at", "delivered_at", "payload"),
            id=doc(TEXT, "the webhook-id header: the same on every attempt"), event=EVENT,
            status=doc({"type": "string", "enum": ["pending", "delivered", "failed"]},
                       "pending: not yet sent, or a retry is scheduled (next_attempt_at)"),
            attempts=integer(0), last_status_code=nullable(STATUS_CODE),
            last_error=doc(nullable(TEXT), "the receiver's status and answer, or why no "
                                           "answer came (refused, timed out)"),
            created_at=TIME, last_attempt_at=nullable(TIME), next_attempt_at=nullable(TIME),
            delivered_at=nullable(TIME), payload=ref("WebhookPayload")),
        "DeliveryPage": obj(("deliveries",), deliveries=array(ref("Delivery"))),
        "WebhookPayload": obj(("type", "timestamp", "data"), type=EVENT, timestamp=doc(
            TIME, "when the event happened (webhook-timestamp is the attempt's)"),
            data=obj(("project_id",), project_id=ID)),
        "ItemFinished": obj(("project_id", "item_id", "label", "confidence", "n_labels"),
                            project_id=ID, item_id=ID, label=TEXT, confidence=num(0, 1),
                            n_labels=integer(0)),
        "ModelTrained": {"allOf": [ref("ModelInfo"), obj(("project_id",), project_id=ID)]},
        "QueueReranked": obj(("project_id", "job_id", "reason", "items", "tail_items",
                              "window_stale", "started_at", "reranked_at"),
                             project_id=ID, job_id=JOB_ID, reason=TEXT, items=doc(integer(0), (
                                 "items re-scored so far: the top of every pool set")),
                             tail_items=doc(integer(0), (
                                 "about how many items the tail re-scores next, at lower "
                                 "priority; each keeps its previous score until then")),
                             window_stale=doc(integer(0), (
                                 "candidates within a claim's reach of a set still holding "
                                 "a previous score (0 unless the scores moved wholesale)")),
                             started_at=TIME, reranked_at=TIME),
        "ExpertFlagged": obj(("project_id", "expert_id", "skill", "reason"), project_id=ID,
                             expert_id=ID, skill=TEXT, reason=TEXT,
                             accuracy=num(0, 1), accuracy_interval=array(num(0, 1)),
                             gold_answered=integer(0), gold_accuracy=nullable(num(0, 1)),
                             agreement=nullable(num(0, 1)), labels=integer(0)),
        "BudgetExhausted": obj(("project_id", "budget_usd", "spent_usd", "reserved_usd",
                                "detail"), project_id=ID, budget_usd=num(0), spent_usd=num(0),
                               reserved_usd=num(0), detail=TEXT),
    }


# The outbound webhooks (OpenAPI 3.1 ``webhooks``): what a subscribed URL receives.
EVENT_DOCS = {
    "item.finished": ("ItemFinished", "An item holds the labels it wants: its aggregated "
                      "label and confidence. Sent once per item."),
    "model.trained": ("ModelTrained", "A retrain stored a new model version (as GET /model "
                      "shows it; cross-validated metrics follow there after the re-score)."),
    "queue.reranked": ("QueueReranked", "A re-score run (after a retrain, a strategy "
                       "change or a new pool map) re-scored the top of every pool set, what "
                       "claims read: the queue is re-ranked. The tail follows at lower "
                       "priority. Sent once per run."),
    "expert.flagged": ("ExpertFlagged", "The qualification gate flagged an expert's skill "
                       "in the project: no real items of it until it rises. Sent once per "
                       "change to flagged."),
    "budget.exhausted": ("BudgetExhausted", "tasks/next refused a task for the project's "
                         "budget_usd. Sent once per budget value reached."),
}
SIGNING = ("Signed as Standard Webhooks does: headers webhook-id (the same on every retry: "
           "drop duplicates by it), webhook-timestamp (unix seconds of the attempt) and "
           "webhook-signature (v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">). "
           "A 2xx delivers; no answer, 408, 429 or 5xx is retried with backoff; any other "
           "status fails the delivery at once.")


def webhook_events() -> dict:
    return {event: {"post": {
        "operationId": "webhook_" + event.replace(".", "_"), "summary": summary,
        "description": SIGNING, "tags": ["webhooks"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "allOf": [ref("WebhookPayload"), obj(type={"const": event}, data=ref(schema))]}}}},
        "responses": {"200": {"description": "any 2xx: delivered"},
                      "default": {"description": "retried (408, 429, 5xx) or failed"}}}}
        for event, (schema, summary) in EVENT_DOCS.items()}


# --- operations -----------------------------------------------------------------------------
PARAMETERS = {
    "pid": "project id", "iid": "item id (the platform's)", "eid": "expert id",
    "tid": "task id, as returned by tasks/next", "jid": "job id", "name": "webhook name",
}
QUERY = {
    "queue": [("limit", integer(1, 1000) | {"default": 20}, "items to return"),
              ("skill", ID, "only items requiring this skill tag")],
    "labels": [("limit", integer(1, 10_000) | {"default": 100}, "records per page")],
    "deliveries": [("limit", integer(1, 10_000) | {"default": 50},
                    "deliveries to return, newest first (at most "
                    "TASKRANK_WEBHOOK_DELIVERIES_KEPT are kept)")],
}
FULL_PASS = {
    "name": "full", "in": "query", "schema": {"type": "boolean", "default": False},
    "description": "true: the next retrain re-aggregates every finished item from scratch "
                   "(Dawid–Skene), instead of the labels new since the last one and the "
                   "items whose experts' accuracies moved"}
# `aggregated` decides what a cursor is, so the two go in one exploded object parameter
# (`?aggregated=true&cursor=...` on the wire) whose schema states the pairing.
EXPORT = {
    "name": "export", "in": "query", "style": "form", "explode": True,
    "description": "`aggregated` (true: one record per finished item instead of every "
                   "label) and `cursor` (the next_cursor of the previous page of the same "
                   "export; none or empty: the first page). A cursor of another form is a "
                   "400.",
    "schema": {"oneOf": [
        obj((), True,
            aggregated={"type": "string", "pattern": "^([Ff][Aa][Ll][Ss][Ee]|0)$",
                        "description": "false (the default): every label"},
            cursor={"type": "string", "pattern": f"^({LOG_CURSOR})?$",
                    "description": f"labels after this one: {LOG_CURSOR_FORMAT}"}),
        obj(("aggregated",), True,
            aggregated={"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|1)$"},
            cursor={"type": "string", "pattern": f"^({ID['pattern'][1:-1]})?$",
                    "description": f"items after this one: {AGGREGATED_CURSOR_FORMAT}"}),
    ]},
}

# (method, path, endpoint, summary, request schema, {status: (description, schema)},
#  error statuses beyond the ones every route of its kind can answer)
OPERATIONS = [
    ("get", "/healthz", "health.get_healthz", "Liveness (does not touch Redis)", None,
     {200: ("alive", "Health")}, ()),
    ("get", "/readyz", "health.get_readyz",
     "Readiness: Redis answers (else 503); `degraded` when no RQ worker is alive", None,
     {200: ("ready or degraded, with how each part is", "Readiness")}, ()),
    ("get", "/openapi.json", "openapi.get_openapi", "This document", None,
     {200: ("the OpenAPI 3.1 document", None)}, ()),
    ("get", "/metrics", "metrics.get_metrics",
     "Prometheus metrics (text format 0.0.4): requests and latency by route and status, "
     "queue depth, open leases, labels counted/late/rejected, model version and retrain "
     "durations per project", None,
     {200: ("the metrics, as text/plain; version=0.0.4", None)}, ()),
    ("post", "/v1/projects", "projects.post_project", "Create a project", "ProjectCreate",
     {201: ("created; Location names it", "Project")}, (409,)),
    ("get", "/v1/projects", "projects.get_projects", "List projects", None,
     {200: ("every project", "ProjectList")}, ()),
    ("get", "/v1/projects/{pid}", "projects.get_one_project",
     "Read a project with its strategy history", None, {200: ("the project", "Project")},
     (404,)),
    ("patch", "/v1/projects/{pid}", "projects.patch_project",
     "Change redundancy, lease_seconds, budget_usd or strategy (a strategy change re-scores "
     "the pool)",
     "ProjectPatch", {200: ("the changed project", "Project")}, (404,)),
    ("get", "/v1/projects/{pid}/queue", "projects.get_queue",
     "Top of the ranking, each item with its breakdown", None,
     {200: ("best first", "Queue")}, (404, 422)),
    ("get", "/v1/projects/{pid}/stats", "projects.get_stats",
     "Counts by status, open leases, labels per hour, model version", None,
     {200: ("the counts", "Stats")}, (404,)),
    ("get", "/v1/projects/{pid}/spend", "projects.get_spend",
     "What the project's labels cost: budget, spent, reserved by open leases, remaining; "
     "dollars, hours and labels by expert, skill and UTC day", None,
     {200: ("the spend", "Spend")}, (404,)),
    ("get", "/v1/projects/{pid}/labels", "projects.get_labels",
     "Export labels (or aggregated labels), resumable by cursor", None,
     {200: ("one page; next_cursor is null at the end", "LabelPage")}, (400, 404, 422)),
    ("post", "/v1/projects/{pid}/items", "items.post_items",
     "Upsert a batch of items (idempotent by id), scored at once; per-item problems come "
     "back in `rejected` and the rest is stored", "ItemBatch",
     {200: ("counts and per-item rejections", "IngestResult")}, (404,)),
    ("get", "/v1/projects/{pid}/items/{iid}", "items.get_one_item",
     "An item with status, priority, breakdown and labels", None,
     {200: ("the item", "ItemView")}, (404,)),
    ("put", "/v1/experts/{eid}", "experts.put_one_expert",
     "Declare an expert (skills, capacity, cost, daily hours); what projects learned of "
     "it is kept",
     "ExpertPut",
     {201: ("created", "Expert"), 200: ("updated", "Expert")}, ()),
    ("get", "/v1/experts/{eid}", "experts.get_one_expert",
     "An expert with open leases, its quality report per project and skill (gold "
     "accuracy, agreement, learned accuracy with its interval, labels, hours, dollars, "
     "gate status) and every flagged skill with the reason (an expert token: itself only)",
     None, {200: ("the expert", "Expert")}, (404,)),
    ("post", "/v1/projects/{pid}/tasks/next", "tasks.post_next_task",
     "Lease the best task for an expert (an expert token: itself only); a retry with the "
     "same Idempotency-Key gets the lease the first request was granted. A 503 means no "
     "lease was recorded, or, when the connection failed mid-way, possibly one: send an "
     "Idempotency-Key to get it back", "NextTaskRequest",
     {200: ("the lease, with the item's payload and the reason; with n, the leases",
            "NextTask"),
      204: ("no task for this expert now; the Taskrank-Reason header says why", None)},
     (404,)),
    ("post", "/v1/tasks/{tid}/label", "tasks.post_label",
     "Submit the label for a lease; a retry with the same Idempotency-Key answers exactly "
     "what the first request answered", "LabelRequest",
     {201: ("counted", "LabelAnswer")}, (404, 409)),
    ("post", "/v1/tasks/{tid}/extend", "tasks.post_extend",
     "Heartbeat: the lease runs lease_seconds from now", None,
     {200: ("the open task", "TaskView")}, (404, 409)),
    ("post", "/v1/tasks/{tid}/release", "tasks.post_release",
     "Give the item back; releasing again answers the same", None,
     {200: ("the released task", "TaskView")}, (404, 409)),
    ("post", "/v1/projects/{pid}/labels", "labels.post_labels",
     "Labels without a lease (a platform's seed, historical or own labels): each record "
     "counts once, idempotent by (item, expert) or (item, source); a record with an expert "
     "teaches its accuracy; per-record problems come back in `rejected` and the rest is "
     "recorded; a 422 when no record passes the request's checks", "LabelBatch",
     {200: ("counts and per-record outcomes", "LabelImport")}, (404,)),
    ("delete", "/v1/projects/{pid}/items/{iid}", "items.delete_item",
     "Withdraw an item for good: it leaves the pool and the gold sets, its open leases "
     "end (a label on one is recorded, not counted: 409); again answers the same", None,
     {200: ("the withdrawn item", "ItemWithdrawal")}, (404,)),
    ("get", "/v1/experts/{eid}/tasks", "experts.get_expert_tasks",
     "The expert's open leases in every project, soonest to expire first, with their "
     "payloads (an expert token: itself only)", None,
     {200: ("the open leases", "ExpertTasks")}, (404,)),
    ("get", "/v1/projects/{pid}/model", "models.get_model",
     "Current model version and metrics (version null before any training)", None,
     {200: ("the model", "ModelInfo")}, (404,)),
    ("post", "/v1/projects/{pid}/retrain", "models.post_retrain",
     "Retrain now (bursts merge into one waiting job)", None,
     {202: ("queued; Location names the job", "JobAccepted")}, (404, 422)),
    ("get", "/v1/jobs/{jid}", "models.get_job", "Status of a background job", None,
     {200: ("the job", "Job")}, (404,)),
    *[(method, "/ls/{pid}" + path, "label_studio." + endpoint, summary, request, answers,
       (404,)) for method, path, endpoint, summary, request, answers in (
        ("get", "/health", "get_health", "Label Studio ML backend: health", None,
         {200: ("up", "LsHealth")}),
        ("get", "/", "get_health", "Label Studio ML backend: health (as /health)", None,
         {200: ("up", "LsHealth")}),
        ("post", "/setup", "post_setup", "Label Studio ML backend: check the labeling config "
         "against the project; the model version", "LsSetup",
         {200: ("the model version", "LsSetupAnswer")}),
        ("post", "/predict", "post_predict", "Label Studio ML backend: taskrank's prediction "
         "per task, scored so that Label Studio's prediction-score order is taskrank's "
         "priority order; tasks taskrank lacks are ingested first", "LsPredict",
         {200: ("one prediction per task, in order", "LsPredictions")}),
        ("post", "/webhook", "post_webhook", "Label Studio ML backend: project events "
         "(annotations become labels without a lease; START_TRAINING retrains)", "LsWebhook",
         {201: ("applied", "LsWebhookAnswer"), 200: ("acknowledged, nothing to do",
                                                    "LsWebhookAnswer")}),
    )],
    ("put", "/v1/projects/{pid}/webhooks/{name}", "webhooks.put_one_webhook",
     "Subscribe a URL to the project's events (create or replace); deliveries are signed "
     "with the secret, which is never shown again", "WebhookPut",
     {201: ("created; Location names it", "Webhook"), 200: ("replaced", "Webhook")},
     (404,)),
    ("get", "/v1/projects/{pid}/webhooks", "webhooks.get_webhooks",
     "The project's webhooks", None, {200: ("every webhook, by name", "WebhookList")},
     (404, 422)),
    ("get", "/v1/projects/{pid}/webhooks/{name}", "webhooks.get_one_webhook",
     "One webhook", None, {200: ("the webhook", "Webhook")}, (404, 422)),
    ("delete", "/v1/projects/{pid}/webhooks/{name}", "webhooks.delete_one_webhook",
     "Unsubscribe: its deliveries page goes, its queued deliveries are not sent", None,
     {204: ("deleted", None)}, (404, 422)),
    ("get", "/v1/projects/{pid}/webhooks/{name}/deliveries", "webhooks.get_deliveries",
     "The webhook's recent deliveries with their status, attempts and last answer", None,
     {200: ("newest first", "DeliveryPage")}, (404, 422)),
]

ERRORS = {
    400: "the body is not valid JSON (NaN and Infinity are not JSON), a header is bad, or "
         "a cursor is not a next_cursor of the same export (the detail gives its form)",
    401: "no token, a malformed Authorization header or an unknown token",
    403: "the token's role is too low, or an expert token acts for another expert",
    404: "no such project, item, expert, task or job",
    409: "the project exists, or the lease is not open (a late label is recorded, not "
         "counted: the body carries the label's fields and the reason)",
    413: "the body or the batch is over its limit (TASKRANK_MAX_BODY_BYTES, "
         "TASKRANK_MAX_BATCH_ITEMS)",
    415: "the body is not sent as application/json",
    422: "a field is invalid: `errors` names each one (`rejected` lists each item when no "
         "item of a batch could be stored); also a number beyond the float range (1e400), "
         "which JSON readers take for Infinity, and a query parameter the route does not "
         "take",
    503: "Redis is not answering, or a Redis Cluster master is failing over; retry after "
         "Retry-After seconds",
}
# The routes whose success promises stored data: on a Redis Cluster with replicas they
# answer only once a replica holds it (queue/replication.py), else this 503.
ACKNOWLEDGED = {"tasks.post_label", "labels.post_labels", "items.post_items",
                "items.delete_item", "label_studio.post_webhook"}
NOT_REPLICATED = (". Also (type .../not-replicated) when the request's data is stored on its "
                  "Redis master but no replica confirmed it within "
                  "TASKRANK_REDIS_WAIT_TIMEOUT_MS: a failover could lose it, so it is not "
                  "acknowledged. The request is safe to repeat (a label with the same "
                  "Idempotency-Key gets the answer of the first); nothing is stored twice")

# The operator web page (server/ui.py): HTML for browsers, documented when registered.
# (method, path, endpoint, summary, {status: media type or None})
PAGES = [
    ("get", "/", "ui.index", "Operator page: flagged experts with the reason, every "
     "project's counts, model and queue top", {200: "text/html"}),
    ("get", "/experts", "ui.experts_page", "Operator page of the experts: flagged skills "
     "with the reason, each expert's quality per project and skill", {200: "text/html"}),
    ("get", "/projects/{pid}", "ui.project_page", "Operator page of one project",
     {200: "text/html", 404: "text/html", 422: "text/html"}),
    ("get", "/projects/{pid}/learning-curve.png", "ui.learning_curve_png",
     "The project's learning curve", {200: "image/png", 404: "text/html", 422: "text/html"}),
    ("get", "/login", "ui.login_form", "Login form: paste a platform or admin token",
     {200: "text/html"}),
    ("post", "/login", "ui.login", "Log in: sets an HttpOnly cookie holding the token's "
     "signed hash, then redirects", {303: None, 401: "text/html", 403: "text/html"}),
    ("post", "/logout", "ui.logout", "Log out: clears the cookie, redirects to the form",
     {303: None}),
]


def _page(app: Flask, entry: tuple) -> dict:
    method, path, endpoint, summary, answers = entry
    role = getattr(app.view_functions[endpoint], "required_role", None)
    responses = {str(status): {"description": media or "redirect (Location)"}
                 for status, media in answers.items()}
    for status, media in answers.items():
        if media:
            responses[str(status)]["content"] = {media: {"schema": {"type": "string"}}}
    operation = {"operationId": "page_" + endpoint.split(".", 1)[1], "summary": summary,
                 "tags": ["ui"], "responses": responses, "security": []}
    if "{pid}" in path:
        operation["parameters"] = [{"name": "pid", "in": "path", "required": True,
                                    "description": PARAMETERS["pid"], "schema": ID}]
    if endpoint == "ui.login":
        operation["requestBody"] = {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": obj(
                ("token",), token=TEXT, next=doc(TEXT, "a path on this site"))}}}
    if role:
        operation.update(_role_fields(role, cookie=True))
        responses["303"] = {"description": "no login: redirect to the login form"}
        responses["401"] = _problem(401)
        responses["403"] = _problem(403)
    else:
        operation["description"] = "No token needed."
    return operation


def _role_fields(role: str, cookie: bool = False) -> dict:
    """Security, ``x-required-role`` and the description of an operation that needs a role."""
    schemes = [{"bearer": []}, {"login": []}] if cookie else [{"bearer": []}]
    return {"security": schemes, "x-required-role": role,
            "description": f"Requires a token of role `{role}` or above. {ROLES_NOTE}"}


def _problem(status: int) -> dict:
    response = {"description": ERRORS.get(status, "an unexpected error (logged)"),
                "content": {"application/problem+json": {"schema": ref("Problem")}}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": TEXT}}
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": integer(0)}}
    return response


NO_TASK_HEADERS = {
    REASON_HEADER: {"required": True, "schema": {"type": "string", "enum": list(
        NO_TASK_REASONS)}, "description": "why no task: nothing_eligible (no pending item "
        "this expert may take), at_capacity (its open leases in this project), inactive, "
        "budget_exhausted (the project's budget_usd, counting open leases), "
        "daily_hours_reached (the expert's max_hours_per_day)"},
    REASON_DETAIL_HEADER: {"required": True, "schema": TEXT, "description":
                           "one sentence naming the numbers, e.g. 'project budget_usd 50.00 "
                           "reached: spent 49.80, reserved 0.00'"},
}


def _operation(app: Flask, entry: tuple) -> dict:
    method, path, endpoint, summary, request, successes, errors = entry
    role = getattr(app.view_functions[endpoint], "required_role", None)
    operation: dict = {"operationId": endpoint.split(".", 1)[1], "summary": summary,
                       "tags": [endpoint.split(".", 1)[0]]}
    params = [{"name": name, "in": "path", "required": True, "description": what,
               "schema": {"tid": TASK_ID, "jid": JOB_ID}.get(name, ID)}
              for name, what in PARAMETERS.items() if "{" + name + "}" in path]
    params += [{"name": name, "in": "query", "schema": schema, "description": what}
               for name, schema, what in QUERY.get(path.rsplit("/", 1)[-1], [])
               if method == "get"]
    if endpoint == "projects.get_labels":
        params.append(EXPORT)
    if endpoint == "models.post_retrain":
        params.append(FULL_PASS)
    if endpoint == "tasks.post_label":
        params.append({"name": "Idempotency-Key", "in": "header", "description":
                       "replays the first answer for the same key and body; 422 when the "
                       "body differs", "schema": {"type": "string", "minLength": 1,
                                                  "maxLength": 200}})
    if endpoint == "tasks.post_next_task":
        params.append({"name": "Idempotency-Key", "in": "header", "description":
                       "per project and expert: a retry gets the first request's lease "
                       "(kept 24 h)", "schema": {"type": "string", "minLength": 1,
                                                 "maxLength": 200}})
    if params:
        operation["parameters"] = params
    if request:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": ref(request)}}}
    responses = {}
    for status, (description, schema) in successes.items():
        responses[str(status)] = {"description": description}
        if "Location" in description:
            responses[str(status)]["headers"] = {"Location": {"schema": TEXT}}
        if schema:
            responses[str(status)]["content"] = {"application/json": {"schema": ref(schema)}}
        elif endpoint == "metrics.get_metrics":
            responses[str(status)]["content"] = {"text/plain": {"schema": TEXT}}
        elif status != 204:
            responses[str(status)]["content"] = {"application/json": {"schema": ANY}}
    statuses = set(errors)
    if role:
        statuses |= {401, 403}
        operation.update(_role_fields(role))
    else:
        operation["security"] = []
        operation["description"] = "No token needed."
    if endpoint == "metrics.get_metrics":
        operation["description"] += (" No token is needed when the server runs with "
                                     "TASKRANK_METRICS_PUBLIC=1." if role else
                                     " (TASKRANK_METRICS_PUBLIC=1)")
    if request:
        statuses |= {400, 413, 415, 422}
    if endpoint.startswith("label_studio."):
        operation["operationId"] = "ls_" + operation["operationId"] + (
            "_root" if path.endswith("/") else "")
        operation["security"].append({"basic": []})
        operation["description"] += (" Label Studio's Basic Authentication carries the token "
                                     "as the password; 'Authorization: Token <token>' is "
                                     "accepted too.")
    if path.startswith(("/v1", "/ls/")) or path in ("/readyz", "/metrics"):
        statuses.add(503)
    for status in sorted(statuses):
        responses[str(status)] = _problem(status)
    if endpoint in ACKNOWLEDGED:
        responses["503"]["description"] += NOT_REPLICATED
    if endpoint == "tasks.post_next_task":
        responses["204"]["headers"] = NO_TASK_HEADERS
        responses["200"]["headers"] = {name: {**header, "required": False} for name, header
                                       in NO_TASK_HEADERS.items()}  # with n: why fewer
    if endpoint == "tasks.post_label":
        responses["409"]["content"]["application/problem+json"]["schema"] = {
            "allOf": [ref("Problem"), ref("LabelAnswer")]}
    if endpoint == "health.get_readyz":
        responses["503"]["content"]["application/problem+json"]["schema"] = {
            "allOf": [ref("Problem"), obj(("parts",), parts=ref("ReadinessParts"))]}
    responses["default"] = _problem(500)
    operation["responses"] = responses
    return operation


def build_document(app: Flask, max_items: int) -> dict:
    """The OpenAPI 3.1 document for ``app`` (roles read from its views)."""
    paths: dict = {}
    for entries, build in ((OPERATIONS, _operation), (PAGES, _page)):
        for entry in entries:
            # Only the blueprints this app registers (the web page is optional).
            if entry[2].split(".", 1)[0] in app.blueprints:
                paths.setdefault(entry[1], {})[entry[0]] = build(app, entry)
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskrank", "version": "1",
                 "description": "Active-learning server for expert labeling. JSON in and "
                                "out; every error is an RFC 9457 problem document. "
                                + ROLES_NOTE},
        "paths": paths,
        "webhooks": webhook_events(),
        "components": {"schemas": schemas(max_items), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "create with `taskrank token create --role ROLE`"},
            "basic": {"type": "http", "scheme": "basic",
                      "description": "Label Studio ML backend routes (/ls/) only: any user "
                                     "name, a taskrank token as the password"},
            "login": {"type": "apiKey", "in": "cookie", "name": "taskrank_login",
                      "description": "the web page's login cookie (POST /login); "
                                     "not accepted by /v1"}}},
    }


@bp.get("/openapi.json")
def get_openapi() -> dict:
    """The API document (no token needed), built once per app."""
    cache = current_app.extensions.setdefault("taskrank.openapi", {})
    if "document" not in cache:
        cache["document"] = build_document(current_app, settings().max_batch_items)
    return cache["document"]
