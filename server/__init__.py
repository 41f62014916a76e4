"""The Flask application factory."""

from __future__ import annotations

import logging
import os

from flask import Flask

from taskrank.queue.connection import connect, rq_url
from taskrank.queue.settings import Settings, install
from taskrank.server import metrics
from taskrank.server.cache import HotCaches
from taskrank.server.context import AppState
from taskrank.server.errors import register_error_handlers
from taskrank.server.hot import HotPath
from taskrank.server.tasks import HOT_ROUTES


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app for ``settings`` (default: from the environment)."""
    settings = install(settings or Settings.from_env())  # also what queue/ jobs and caches read
    # Explicit paths: Flask cannot derive them for a package mapped by package-dir.
    here = os.path.dirname(os.path.abspath(__file__))
    app = Flask(__name__, root_path=here, static_folder=None,
                instance_path=os.path.join(os.path.abspath(settings.data_dir), "instance"))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    # fail_fast: a request meeting a Redis Cluster failover is answered 503, not held.
    app.extensions["taskrank"] = AppState(settings=settings,
                                          redis=connect(settings, fail_fast=True),
                                          caches=HotCaches(settings.cache_seconds))
    rq_url(settings)  # a cluster without a Redis for RQ is refused now, not at the first job
    logging.basicConfig(level=settings.log_level)
    register_error_handlers(app)
    _register_blueprints(app)
    metrics.init_app(app, public=settings.metrics_public)
    if settings.fast_path:
        app.wsgi_app = HotPath(app, HOT_ROUTES)
    return app


def _register_blueprints(app: Flask) -> None:
    from taskrank.server import (
        experts,
        health,
        items,
        labels,
        models,
        openapi,
        projects,
        tasks,
        ui,
        webhooks,
    )
    from taskrank.server.label_studio import bp as label_studio_bp

    for module in (health, projects, items, labels, experts, tasks, models, webhooks, ui,
                   openapi):
        app.register_blueprint(module.bp)
    app.register_blueprint(label_studio_bp)
