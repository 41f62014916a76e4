"""Fixtures of the fault tests: real processes, each one stopped at the end of its test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.stack import RedisProcess, WebServer


class Stack:
    """Starts the processes of one test and remembers them for the teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[RedisProcess | WebServer] = []

    def redis(self, fsync: str = "always") -> RedisProcess:
        server = RedisProcess(self.tmp_path / "redis", fsync)
        self.started.append(server)
        return server.start()

    def web(self, redis_url: str, workers: int = 2, preload: bool = False,
            **env: str) -> WebServer:
        server = WebServer(redis_url, self.tmp_path, workers, preload, **env)
        self.started.append(server)
        return server.wait_ready(workers)

    def close(self) -> None:
        for process in reversed(self.started):
            process.close()


@pytest.fixture
def stack(tmp_path: Path):
    """stack.redis() / stack.web(url): started now, stopped (or killed) after the test."""
    processes = Stack(tmp_path)
    try:
        yield processes
    finally:
        processes.close()
