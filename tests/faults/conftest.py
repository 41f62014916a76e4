"""Fixtures of the fault tests: real processes from the process stack, each one stopped
(or killed) at the end of its test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from taskrank.queue.embedded import free_port
from taskrank.queue.settings import Settings
from taskrank.scripts.stack import Stack, clean_environ
from tests.faults.serve import ServeProcess
from tests.faults.stack import ADMIN_TOKEN, START_TIMEOUT, RedisProcess, WebServer


class Processes:
    """The stack of one test: its Redis and gunicorn share the test's tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        settings = Settings(data_dir=str(tmp_path), admin_token=ADMIN_TOKEN,
                            log_level="WARNING")
        self.stack = Stack(settings, clean_environ(), stdout=tmp_path / "processes.log",
                           stderr=subprocess.STDOUT, redis_stop_timeout=5.0)
        self.redises: list[RedisProcess] = []

    def redis(self, fsync: str = "always") -> RedisProcess:
        """redis-server on a fixed TCP port, so a restart is found at the same URL."""
        self.stack.settings = self.stack.settings.replace(redis_fsync=fsync)
        server = self.stack.start_redis(self.tmp_path / "redis", port=free_port(),
                                        timeout=START_TIMEOUT)
        self.redises.append(RedisProcess(server))
        return self.redises[-1]

    def web(self, redis_url: str, workers: int = 2, preload: bool = False,
            **env: str) -> WebServer:
        self.stack.settings = self.stack.settings.replace(redis_url=redis_url)
        web = self.stack.start_web(workers=workers, port=0, preload=preload,
                                   graceful_timeout=5, **env)
        return WebServer(web.wait_ready(START_TIMEOUT, workers))

    def close(self) -> None:
        """Kill gunicorn's group at once (a graceful stop takes seconds and a test has
        nothing left to learn from it), then stop Redis."""
        for server in self.redises:
            server.resume()
        self.stack.kill()


@pytest.fixture
def stack(tmp_path: Path):
    """stack.redis() / stack.web(url): started now, stopped (or killed) after the test."""
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def serve(tmp_path: Path):
    """serve(name, port, **env) -> a ``taskrank serve`` started now on ``tmp_path/data``;
    it and every process it had are killed (by pid) after the test."""
    started: list[ServeProcess] = []

    def start(name: str = "serve", port: int | None = None, **env: str) -> ServeProcess:
        started.append(ServeProcess(tmp_path / "data", name, port, **env))
        return started[-1]

    yield start
    for server in started:
        server.kill_leftovers()
