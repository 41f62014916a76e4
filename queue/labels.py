"""The label log: every label in order (resumable by cursor), and aggregated labels."""

from __future__ import annotations

import json
import re

import redis

from taskrank.queue import keys as K
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import InvalidCursorError
from taskrank.queue.validation import ID_PATTERN

# A label's stream id, <milliseconds>-<sequence>.  Redis takes each part up to 2**64 - 1 and
# refuses more; 19 digits hold every id it hands out (milliseconds until the year 316
# million), so this one rule is what a client may send and what the document states.
LOG_CURSOR = r"[0-9]{1,19}-[0-9]{1,19}"
_LOG_CURSOR = re.compile(LOG_CURSOR)
LOG_CURSOR_FORMAT = ("<milliseconds>-<sequence>, two integers of 1 to 19 digits "
                     "(e.g. 1700000000000-0)")
AGGREGATED_CURSOR_FORMAT = "an item id, 1-128 characters of A-Z a-z 0-9 . _ -"


def check_cursor(cursor: str, aggregated: bool) -> str:
    """``cursor`` when it has the form of a next_cursor of that export, else a 400."""
    pattern, form = ((ID_PATTERN, AGGREGATED_CURSOR_FORMAT) if aggregated
                     else (_LOG_CURSOR, LOG_CURSOR_FORMAT))
    if not pattern.fullmatch(cursor):
        export = "aggregated labels" if aggregated else "labels"
        detail = (f"must be the next_cursor of an earlier page of {export}: {form}; "
                  f"got {cursor!r}"[:300])
        raise InvalidCursorError(f"cursor: {detail}",
                                 errors=[{"field": "cursor", "detail": detail}])
    return cursor


def export_labels(r: redis.Redis, pid: str, cursor: str | None, limit: int) -> dict:
    """Labels after ``cursor`` (a stream id), oldest first; ``next_cursor`` None at the end."""
    start = f"({check_cursor(cursor, aggregated=False)}" if cursor else "-"
    entries = r.xrange(K.labels_stream_key(pid), min=start, max="+", count=limit + 1)
    page = entries[:limit]
    labels = [_record(sid, f) for sid, f in page]
    more = len(entries) > limit
    return {"labels": labels, "next_cursor": page[-1][0] if more else None}


def _record(sid: str, f: dict[str, str]) -> dict:
    """One label of the stream as exported: the optional fields only when it has them."""
    record = {"task_id": f["task"], "item_id": f["item"], "expert_id": f["expert"] or None,
              "label": f["label"], "seconds_spent": float(f["seconds"]),
              "counted": f["counted"] == "1", "created_at": rfc3339(f["at"]), "cursor": sid}
    if f.get("ll"):  # brought in without a lease (queue/label_import.py)
        record["leaseless"] = True
        for name, key in (("source", "src"), ("answered_at", "aa")):
            if f.get(key):
                record[name] = f[key]
    if f.get("cm"):
        record["comment"] = f["cm"]
    if f.get("an"):
        record["answer"] = json.loads(f["an"])
    return record


def export_aggregated(r: redis.Redis, pid: str, cursor: str | None, limit: int) -> dict:
    """One record per finished item (by item id), with its aggregated label."""
    start = f"({check_cursor(cursor, aggregated=True)}" if cursor else "-"
    ids = r.zrangebylex(K.labeled_key(pid), start, "+", start=0, num=limit + 1)
    page = ids[:limit]
    pipe = r.pipeline()
    for iid in page:
        pipe.hmget(K.item_key(pid, iid), "al", "ac", "done")
    records = [{"item_id": iid, "label": label, "confidence": float(conf or 0),
                "n_labels": int(done or 0)}
               for iid, (label, conf, done) in zip(page, pipe.execute(), strict=True)]
    return {"labels": records, "next_cursor": page[-1] if len(ids) > limit else None}
