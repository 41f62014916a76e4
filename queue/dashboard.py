"""What the operator web page reads: the API's own numbers and the learning curve.

The page must show exactly what the API answers, so the overview calls the functions behind
``/stats``, ``/model`` and ``/queue`` instead of counting anything itself.
"""

from __future__ import annotations

import json

import redis

from taskrank.queue import keys as K
from taskrank.queue.clock import rfc3339
from taskrank.queue.items import ranked_queue
from taskrank.queue.models import model_info
from taskrank.queue.stats import project_stats


def project_overview(r: redis.Redis, project: dict, queue_limit: int) -> dict:
    """A project with its stats, current model and the top ``queue_limit`` of its queue."""
    return {"project": project, "stats": project_stats(r, project),
            "model": model_info(r, project["id"]),
            "queue": ranked_queue(r, project, queue_limit, None)}


def learning_curve(r: redis.Redis, pid: str) -> list[dict]:
    """Labels trained on and cross-validated accuracy of each stored model version, oldest first."""
    points = []
    for entry in reversed(r.lrange(K.model_history_key(pid), 0, -1)):
        record = json.loads(entry)
        points.append({"version": record["version"], "n_labels": record["n_labels"],
                       "accuracy": (record.get("metrics") or {}).get("accuracy"),
                       "trained_at": rfc3339(record.get("trained_at"))})
    return points
