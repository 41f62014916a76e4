"""What the operator web page reads: the API's own numbers, the learning curve, and login.

The page must show exactly what the API answers, so the overview calls the functions behind
``/stats``, ``/model`` and ``/queue`` instead of counting anything itself.
"""

from __future__ import annotations

import hmac
import json
import secrets

import redis

from taskrank.queue import keys as K
from taskrank.queue.clock import rfc3339
from taskrank.queue.items import ranked_queue
from taskrank.queue.models import model_info
from taskrank.queue.stats import project_stats
from taskrank.queue.tokens import Principal, hash_token


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


def web_secret(r: redis.Redis) -> str:
    """The cookie-signing secret, created on first use; every web process reads the same one.

    Whoever can read it can forge a login, but whoever can read Redis can already create an
    admin token, so it adds no new way in.  Deleting the key logs every browser out.
    """
    secret = r.get(K.web_secret_key())
    if secret is None:
        r.set(K.web_secret_key(), secrets.token_hex(32), nx=True)  # the first writer wins
        secret = r.get(K.web_secret_key())
    return secret


def principal_for_hash(r: redis.Redis, token_hash: str,
                       admin_token: str | None = None) -> Principal | None:
    """The principal of the token whose SHA-256 is ``token_hash``, or None if it is unknown.

    The same answer as ``tokens.authenticate`` for that token, so a login cookie can carry the
    hash instead of the token and still be checked against Redis on every request.
    """
    if admin_token and hmac.compare_digest(token_hash, hash_token(admin_token)):
        return Principal("admin")
    fields = r.hgetall(K.token_key(token_hash))
    if not fields:
        return None
    return Principal(fields["role"], fields.get("expert_id"))
