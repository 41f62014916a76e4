"""Commands in another shell find the running server's Redis, or refuse saying what to set."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taskrank.queue.embedded import EmbeddedRedis
from taskrank.queue.running import (
    NoServerError,
    command_settings,
    register,
    running_servers,
    server_url,
)
from taskrank.queue.settings import Settings


@pytest.fixture
def run_dir(tmp_path):
    return str(tmp_path / "run")


def noted(run_dir, redis_url, url="http://127.0.0.1:8200", data_dir="/srv/taskrank/var"):
    return register(Settings(redis_url=redis_url, data_dir=data_dir, run_dir=run_dir), url)


def test_a_noted_server_is_found_from_another_data_dir(run_dir, redis_server, tmp_path):
    """No TASKRANK_DATA_DIR of the server: its note gives its Redis, said on stderr, and
    nothing is started in the shell's data dir."""
    noted(run_dir, redis_server.url)
    said = []
    shell = Settings(data_dir=str(tmp_path / "var"), run_dir=run_dir)
    with command_settings(shell, say=said.append) as found:
        assert found.redis_url == redis_server.url
    assert "http://127.0.0.1:8200" in said[0] and "/srv/taskrank/var" in said[0]
    assert not (tmp_path / "var").exists()


def test_nothing_running_and_no_data_is_refused_with_what_to_set(run_dir, tmp_path):
    """No server, no data: NoServerError naming TASKRANK_DATA_DIR and TASKRANK_REDIS_URL;
    no empty Redis is started."""
    shell = Settings(data_dir=str(tmp_path / "var"), run_dir=run_dir)
    with pytest.raises(NoServerError) as error, command_settings(shell):
        pass
    message = str(error.value)
    assert "TASKRANK_DATA_DIR" in message and "TASKRANK_REDIS_URL" in message
    assert "taskrank serve" in message and str(tmp_path / "var") in message
    assert not (tmp_path / "var" / "appendonlydir").exists()


def test_the_data_of_a_stopped_server_is_served_for_the_command(run_dir, tmp_path):
    """A data dir holding a stopped server's data is started for the command, then stopped."""
    with EmbeddedRedis(tmp_path) as server:
        server_url_before = server.url
    shell = Settings(data_dir=str(tmp_path), run_dir=run_dir)
    with command_settings(shell) as found:
        assert found.redis_url == server_url_before
    assert EmbeddedRedis(tmp_path).running_url() is None


def test_the_note_of_a_dead_server_is_dropped(run_dir, redis_server):
    """A note whose process is gone is not used and is removed."""
    path = noted(run_dir, redis_server.url)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": int(dead.stdout)}))
    assert running_servers(Settings(run_dir=run_dir)) == []
    assert not path.exists()


def test_several_servers_are_told_apart_by_taskrank_url(run_dir, redis_server):
    """Two servers: TASKRANK_URL picks one; without it the command is refused, naming both."""
    noted(run_dir, "redis://127.0.0.1:1/0", "http://127.0.0.1:8000", "/a/var")
    noted(run_dir, redis_server.url, "http://127.0.0.1:8200", "/b/var")
    with command_settings(Settings(run_dir=run_dir, url="http://127.0.0.1:8200/")) as found:
        assert found.redis_url == redis_server.url
    with pytest.raises(NoServerError) as error, command_settings(
            Settings(run_dir=run_dir, data_dir="/nonexistent/var")):
        pass
    assert "/a/var" in str(error.value) and "/b/var" in str(error.value)
    assert "TASKRANK_URL" in str(error.value)


def test_client_commands_default_to_the_only_running_server(run_dir, redis_server):
    """TASKRANK_URL wins; else the one noted server; else port 8000."""
    assert server_url(Settings(run_dir=run_dir)) == "http://127.0.0.1:8000"
    noted(run_dir, redis_server.url, "http://127.0.0.1:8200")
    assert server_url(Settings(run_dir=run_dir)) == "http://127.0.0.1:8200"
    assert server_url(Settings(run_dir=run_dir, url="http://h:1")) == "http://h:1"


def test_a_noted_server_on_a_cluster_gives_its_redis_for_rq_too(run_dir, tmp_path):
    """A server noted with a cluster and the Redis it started for RQ: a command finds both
    (and whether it is a cluster); TASKRANK_RQ_REDIS_URL of the shell wins."""
    register(Settings(redis_url="redis://127.0.0.1:7000", redis_cluster=True,
                      rq_redis_url="unix:///srv/var/rq/redis.sock", run_dir=run_dir),
             "http://127.0.0.1:8200")
    shell = Settings(data_dir=str(tmp_path / "var"), run_dir=run_dir)
    with command_settings(shell) as found:
        assert (found.redis_url, found.redis_cluster, found.rq_redis_url) == (
            "redis://127.0.0.1:7000", True, "unix:///srv/var/rq/redis.sock")
    with command_settings(shell.replace(rq_redis_url="redis://q:6379/0")) as found:
        assert found.rq_redis_url == "redis://q:6379/0"
