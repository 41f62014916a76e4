"""Items: validate a batch, score it at once, upsert it; read items and the ranked queue."""

from __future__ import annotations

import json
import math
import time

import redis

from taskrank.learning._checks import SUM_TOLERANCE  # one tolerance: ingest and scoring
from taskrank.learning.priority import Strategy
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import InvalidInputError, NoSuchItemError
from taskrank.queue.experts import GENERAL
from taskrank.queue.models import current_ranker
from taskrank.queue.pool_map import cover, current_pool_map
from taskrank.queue.pool_map_jobs import maybe_map_pool
from taskrank.queue.projects import set_input_schema
from taskrank.queue.scoring import ItemInput, score_items, stored_item
from taskrank.queue.settings import Settings, current
from taskrank.queue.validation import ID_PATTERN, check_json_numbers

ITEM_FIELDS = {"id", "predictions", "features", "skills", "payload", "boost", "gold"}
MAX_SKILLS = 32
MAX_MODELS = 32
# Bounds keep scores finite: larger magnitudes overflow the scaler and the priority sum.
MAX_BOOST = 1e6
MAX_FEATURE = 1e12
_UPSERT_WIDTH = 12
_ID_RULE = " must be 1-128 characters of A-Z a-z 0-9 . _ -"


class Rejected(ValueError):
    """One item of a batch cannot be stored; the rest of the batch goes on."""


def parse_items(project: dict, raw_items: list) -> tuple[list[ItemInput], list[dict]]:
    """Valid items and rejections ``{"index", "id", "detail"}`` (the first of duplicates wins)."""
    valid, rejected, first_index = [], [], {}
    n_features = project.get("n_features")
    for index, raw in enumerate(raw_items):
        item_id = raw.get("id") if isinstance(raw, dict) else None
        try:
            item = parse_item(raw, project, n_features)
            if item.id in first_index:
                first = first_index[item.id]
                raise Rejected(f"duplicate id in this batch (first at index {first})")
        except Rejected as error:
            rejected.append({"index": index, "id": item_id if isinstance(item_id, str) else None,
                             "detail": str(error)})
            continue
        first_index[item.id] = index
        n_features = n_features or (len(item.features) if item.features else None)
        valid.append(item)
    return valid, rejected


def parse_item(raw: object, project: dict, n_features: int | None) -> ItemInput:
    if not isinstance(raw, dict):
        raise Rejected(f"an item must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - ITEM_FIELDS)
    if unknown:
        raise Rejected(f"unknown field '{unknown[0]}'; expected one of {sorted(ITEM_FIELDS)}")
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not ID_PATTERN.fullmatch(item_id):
        raise Rejected("id" + _ID_RULE + f", got {item_id!r}"[:150])
    predictions = _predictions(raw.get("predictions"), len(project["labels"]))
    features = _features(raw.get("features"), n_features)
    if not predictions and features is None:
        raise Rejected("an item needs predictions or features (or both)")
    boost = raw.get("boost", 0.0)
    if isinstance(boost, bool) or not isinstance(boost, int | float) or not (
            abs(boost) <= MAX_BOOST):
        raise Rejected(f"boost must be a number from -{MAX_BOOST:g} to {MAX_BOOST:g}, "
                       f"got {boost!r}"[:200])
    gold = raw.get("gold")
    if gold is not None and gold not in project["labels"]:
        raise Rejected(f"gold must be one of the project's labels {project['labels']}"[:300])
    return ItemInput(item_id, predictions, features, _skills(raw.get("skills", [])),
                     _payload(raw.get("payload", {})), float(boost), gold)


def _predictions(value: object, k: int) -> dict[str, list[float]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_MODELS:
        raise Rejected(f"predictions must be an object of at most {MAX_MODELS} "
                       "model name -> probability list")
    clean = {}
    for name, row in value.items():
        if not ID_PATTERN.fullmatch(name):
            raise Rejected(f"model name {name!r}"[:150] + _ID_RULE)
        if not isinstance(row, list) or len(row) != k:
            raise Rejected(f"predictions.{name} must be a list of {k} probabilities "
                           f"(one per project label), got {_describe(row)}")
        if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in row):
            raise Rejected(f"predictions.{name} must hold numbers only")
        # At most 1 (within the tolerance) each, so their sum cannot overflow to infinity;
        # the comparisons also refuse NaN, infinity and integers beyond the float range.
        if not all(0 <= p <= 1 + SUM_TOLERANCE for p in row):
            raise Rejected(f"predictions.{name} must be finite and non-negative, each at "
                           f"most 1, got {row}"[:300])
        total = math.fsum(row)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise Rejected(f"predictions.{name} must sum to 1 (within {SUM_TOLERANCE}), "
                           f"sums to {total:.6g}")
        clean[name] = [p / total for p in row]
    return clean


def _features(value: object, n_features: int | None) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > 4096:
        raise Rejected("features must be a non-empty list of at most 4096 numbers")
    if n_features and len(value) != n_features:
        raise Rejected(f"features must have {n_features} values (fixed per project by its "
                       f"first item with features), got {len(value)}")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and abs(x) <= MAX_FEATURE
               for x in value):
        raise Rejected(f"features must be numbers from -{MAX_FEATURE:g} to {MAX_FEATURE:g}")
    return [float(x) for x in value]


def _payload(value: object) -> object:
    """The opaque payload, refused when it holds a number beyond the float range: stored,
    it would reach every expert client as Infinity, which is not JSON."""
    try:
        check_json_numbers(value, "payload")
    except InvalidInputError as error:
        raise Rejected(error.detail) from None
    return value


def _skills(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_SKILLS:
        raise Rejected(f"skills must be a list of at most {MAX_SKILLS} tags")
    for tag in value:
        if not isinstance(tag, str) or not ID_PATTERN.fullmatch(tag):
            raise Rejected(f"skill tag {tag!r}"[:150] + _ID_RULE)
    return sorted(set(value))


def _describe(value: object) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__


def ingest(r: redis.Redis, project: dict, raw_items: list, ranker: object | None = None,
           settings: Settings | None = None) -> dict:
    """Validate, score and upsert a batch; answers ``{"created", "updated", "rejected"}``.

    When the pool has no map yet or outgrew it, a refit is queued (``pool_map_jobs.map_pool``).
    """
    items, rejected = parse_items(project, raw_items)
    if not items:
        first = rejected[0]
        raise InvalidInputError(f"none of the {len(raw_items)} items could be stored; "
                                f"items[{first['index']}]: {first['detail']} (see 'rejected' "
                                "for each reason)", rejected=rejected)
    pool_map = current_pool_map(r, project["id"])
    coverage, clusters = cover(items, pool_map)
    priorities, breakdowns = score_items(
        items, project["strategy"], len(project["labels"]), ranker, coverage=coverage,
        reference=pool_map.pool_map.reference if pool_map else None)
    _remember_schema(r, project, items)
    version = getattr(ranker, "version", 0) if ranker is not None else 0
    args = [time.time(), project["redundancy"], _UPSERT_WIDTH]
    for item, priority, breakdown, cluster in zip(items, priorities, breakdowns,
                                                  clusters.tolist(), strict=True):
        args += [item.id, _compact(item.predictions), _compact(item.features),
                 _compact(item.payload), ",".join(item.skills), item.boost, item.gold or "",
                 repr(float(priority)), breakdown, version, project["strategy_version"],
                 cluster]
    pid = project["id"]
    created, updated, withdrawn = lua.run(
        r, "upsert_items", pid, [K.items_key(pid), K.tags_key(pid), *_touched_keys(pid, items)],
        args)
    maybe_map_pool(r, settings or current(), project)
    return {"created": created, "updated": updated,
            "rejected": rejected + _withdrawn(raw_items, withdrawn)}


def _touched_keys(pid: str, items: list[ItemInput]) -> list[str]:
    """The keys an upsert of ``items`` names, declared to the script: the items' hashes, the
    pool sets of their tags and the gold sets of the gold ones."""
    tags = sorted({tag for item in items for tag in item.skills})
    gold = sorted({tag for item in items if item.gold for tag in item.skills or [GENERAL]})
    return ([K.item_key(pid, item.id) for item in items] + [K.pool_tag_key(pid, tag)
            for tag in tags] + [K.gold_key(pid, tag) for tag in gold])


def _withdrawn(raw_items: list, ids: list[str]) -> list[dict]:
    """Rejections of the items an upsert left alone because they were withdrawn."""
    index = {}
    for i, raw in enumerate(raw_items):
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            index.setdefault(raw["id"], i)
    return sorted(({"index": index[iid], "id": iid, "detail": (
        "this item was withdrawn (DELETE); a withdrawn item stays withdrawn: send it "
        "under a new id")} for iid in ids), key=lambda row: row["index"])


def _remember_schema(r: redis.Redis, project: dict, items: list[ItemInput]) -> None:
    n_features = next((len(item.features) for item in items if item.features), None)
    models = set(project.get("models") or [])
    new_models = {name for item in items for name in item.predictions} - models
    if (n_features and not project.get("n_features")) or new_models:
        set_input_schema(r, project["id"], n_features, sorted(models | new_models))


def _compact(value: object) -> str:
    return "" if value is None else json.dumps(value, separators=(",", ":"))


def item_view(project: dict, iid: str, fields: dict, labels: list[str] | None = None,
              priority: float | None = None) -> dict:
    """The public form of an item hash, with its priority explained term by term.

    ``priority`` is the live score of a pending item (its sorted-set score, which a
    re-score moves without touching the hash); otherwise the stored one is shown.
    """
    weights = Strategy.from_dict(project["strategy"]).to_dict()["weights"]
    terms = json.loads(fields["bd"]) if fields.get("bd") else {}
    view = {
        "id": iid, "status": fields.get("st"),
        "priority": float(fields.get("pr") or 0) if priority is None else priority,
        "breakdown": {name: {"value": value, "weight": weights.get(name, 1.0 if name in (
            "boost", "random", "coverage") else 0.0)} for name, value in terms.items()},
        "skills": fields["s"].split(",") if fields.get("s") else [],
        "labels_wanted": int(fields.get("want", 1)), "labels_out": int(fields.get("out", 0)),
        "labels_done": int(fields.get("done", 0)), "model_version": int(fields.get("mv") or 0),
        "payload": json.loads(fields["pl"]) if fields.get("pl") else None,
    }
    if fields.get("al"):
        view["aggregated"] = {"label": fields["al"], "confidence": float(fields.get("ac", 0))}
    if fields.get("wa"):
        view["withdrawn_at"] = rfc3339(fields["wa"])
    if labels is not None:
        view["predictions"] = json.loads(fields["p"]) if fields.get("p") else {}
        view["labels"] = [{"expert_id": voter or None, "label": label}  # None: no expert
                          for voter, label in (entry.split("\t", 1) for entry in labels)]
    return view


def current_breakdowns(r: redis.Redis, project: dict, rows: list[tuple[str, dict]]) -> None:
    """Recompute, in place, the breakdown of the items scored under an older model or
    strategy than the current ones (one vectorised call for all of them).

    A re-score stores only priorities, so ``bd``/``mv``/``sv`` keep what ingest (or
    ``set_priorities``) wrote; the explanation is brought up to date when it is read.
    """
    ranker = current_ranker(r, project)
    version, strategy = ranker.version if ranker else 0, str(project["strategy_version"])
    stale = [(iid, fields) for iid, fields in rows
             if int(fields.get("mv") or 0) < version or fields.get("sv") != strategy]
    if not stale:
        return
    items = [stored_item(iid, fields.get("p"), fields.get("f"), fields.get("b"))
             for iid, fields in stale]
    pool_map = current_pool_map(r, project["id"])
    _, breakdowns = score_items(items, project["strategy"], len(project["labels"]), ranker,
                                coverage=cover(items, pool_map)[0],
                                reference=pool_map.pool_map.reference if pool_map else None)
    for (_, fields), breakdown in zip(stale, breakdowns, strict=True):
        fields.update(bd=breakdown, mv=str(version), sv=strategy)


def get_item(r: redis.Redis, project: dict, iid: str) -> dict:
    pid = project["id"]
    pipe = r.pipeline()
    pipe.hgetall(K.item_key(pid, iid))
    pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
    fields, labels = pipe.execute()
    if not fields:
        raise NoSuchItemError(f"no item '{iid}' in project '{pid}'")
    priority = None
    if fields.get("st") == "pending":  # None if claimed meanwhile: then 'pr' is current
        tags = fields["s"].split(",") if fields.get("s") else []
        priority = r.zscore(K.pool_keys(pid, tags)[0], iid)
    current_breakdowns(r, project, [(iid, fields)])
    return item_view(project, iid, fields, labels, priority)


def ranked_queue(r: redis.Redis, project: dict, limit: int, skill: str | None) -> list[dict]:
    """The top ``limit`` rankable items (of one skill tag, if given), best first."""
    pid = project["id"]
    if skill:
        top = r.zrevrange(K.pool_tag_key(pid, skill), 0, limit - 1, withscores=True)
    else:
        top = _top_of_every_pool(r, pid, limit)
    pipe = r.pipeline()
    for iid, _ in top:
        pipe.hgetall(K.item_key(pid, iid))
    rows = [(iid, score, fields) for (iid, score), fields in zip(top, pipe.execute(),
                                                                  strict=True) if fields]
    current_breakdowns(r, project, [(iid, fields) for iid, _, fields in rows])
    return [item_view(project, iid, fields, priority=score) for iid, score, fields in rows]


def _top_of_every_pool(r: redis.Redis, pid: str, limit: int) -> list[tuple[str, float]]:
    """The top ``limit`` (id, priority) over the untagged set and every tag set.

    There is no global pool; an item has the same score in every set it is in, so merging
    the tops of all sets and dropping duplicates gives the global top.
    """
    tags = sorted(r.smembers(K.tags_key(pid)))
    pipe = r.pipeline(transaction=False)
    for key in [K.pool_untagged_key(pid)] + [K.pool_tag_key(pid, tag) for tag in tags]:
        pipe.zrevrange(key, 0, limit - 1, withscores=True)
    merged: dict[str, float] = {}
    for rows in pipe.execute():
        merged.update(rows)
    # Ties in the order one sorted set gives them (member descending).
    return sorted(merged.items(), key=lambda row: (row[1], row[0]), reverse=True)[:limit]
