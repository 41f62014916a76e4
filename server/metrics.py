"""``GET /metrics`` (Prometheus) and the hooks that count every request (into this
process's ``server/recorder.py`` buffer).

The endpoint needs a platform token, like the rest of the API; with
``TASKRANK_METRICS_PUBLIC=1`` it needs none (for a scraper on an internal network).
"""

from __future__ import annotations

import functools
import re
import time

from flask import Blueprint, Flask, Response, current_app, g, request

from taskrank.queue import metrics
from taskrank.queue.validation import ID_PATTERN
from taskrank.server.auth import require
from taskrank.server.context import redis_client
from taskrank.server.recorder import RequestRecorder

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "<unmatched>"  # one series for every URL no route matches (bounded labels)


def init_app(app: Flask, public: bool) -> None:
    """Count every request of ``app`` and serve ``GET /metrics``."""
    app.extensions["taskrank.metrics"] = RequestRecorder(app.extensions["taskrank"].redis)
    app.before_request(_start_timer)
    app.after_request(_record)
    app.register_blueprint(_blueprint(public))


def _blueprint(public: bool) -> Blueprint:
    # Built per app: the role the view requires (and the OpenAPI document shows) follows
    # this app's settings.
    bp = Blueprint("metrics", __name__)
    view = get_metrics if public else require("platform")(get_metrics)
    bp.add_url_rule("/metrics", "get_metrics", view, methods=["GET"])
    return bp


def get_metrics() -> Response:
    """Every metric, this process's latest requests included."""
    current_app.extensions["taskrank.metrics"].flush()
    return Response(metrics.render(redis_client()), mimetype=None,
                    content_type=metrics.CONTENT_TYPE)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    seconds = time.perf_counter() - started if started is not None else 0.0
    route = template(request.url_rule.rule) if request.url_rule is not None else UNMATCHED
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    current_app.extensions["taskrank.metrics"].observe(
        method, route, response.status_code, seconds, _rejected_label_project(response))
    return response


@functools.lru_cache(maxsize=256)
def template(rule: str) -> str:
    """``/v1/tasks/<tid>/label`` -> ``/v1/tasks/{tid}/label``, as the API document writes it."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _rejected_label_project(response: Response) -> str | None:
    """The project of a label refused as invalid (422), read from its task id."""
    if request.endpoint != "tasks.post_label" or response.status_code != 422:
        return None
    pid = (request.view_args or {}).get("tid", "").partition(".")[2]
    return pid if ID_PATTERN.fullmatch(pid) else None
