"""What views need from the application: settings and the Redis clients."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from taskrank.queue.connection import DataClient
from taskrank.queue.experts import load_expert
from taskrank.queue.projects import get_project
from taskrank.queue.settings import Settings
from taskrank.server.cache import HotCaches


@dataclass
class AppState:
    settings: Settings
    redis: DataClient  # decoded strings
    caches: HotCaches


def state() -> AppState:
    return current_app.extensions["taskrank"]


def settings() -> Settings:
    return state().settings


def redis_client() -> DataClient:
    return state().redis


def caches() -> HotCaches:
    return state().caches


def cached_project(pid: str, app_state: AppState | None = None) -> dict:
    """The project, at most ``cache_seconds`` old (read-only: shared between requests)."""
    app_state = app_state or state()
    return app_state.caches.projects.get(pid, lambda: get_project(app_state.redis, pid))


def cached_expert(eid: str, app_state: AppState | None = None) -> dict:
    """The expert, at most ``cache_seconds`` old (read-only: shared between requests)."""
    app_state = app_state or state()
    return app_state.caches.experts.get(eid, lambda: load_expert(app_state.redis, eid))
