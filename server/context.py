"""What views need from the application: settings and the Redis clients."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from taskrank.queue.settings import Settings


@dataclass
class AppState:
    settings: Settings
    redis: redis.Redis  # decoded strings


def state() -> AppState:
    return current_app.extensions["taskrank"]


def settings() -> Settings:
    return state().settings


def redis_client() -> redis.Redis:
    return state().redis
