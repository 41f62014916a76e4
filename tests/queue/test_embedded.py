"""The embedded Redis: a real server whose data survives a stop and a start, private to
its user, one per data dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import redis

from taskrank.queue.embedded import EmbeddedRedis
from taskrank.queue.running import command_settings
from taskrank.queue.settings import Settings


def test_data_survives_stop_and_start(tmp_path):
    """A write acknowledged before stop() is there after the next start()."""
    with EmbeddedRedis(tmp_path) as server:
        redis.Redis.from_url(server.url).set("label", "cardiology")
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        assert client.get("label") == b"cardiology"
        assert client.config_get("appendonly")["appendonly"] == "yes"


def test_second_server_on_same_data_dir_is_refused(tmp_path):
    """Two servers may not share one data dir (they would corrupt the append-only file)."""
    with EmbeddedRedis(tmp_path):
        try:
            EmbeddedRedis(tmp_path).start()
        except RuntimeError as error:
            assert "already runs" in str(error)
        else:
            raise AssertionError("a second server started on the same data dir")


def test_one_off_commands_reuse_a_running_server(tmp_path):
    """command_settings finds the embedded server another process started on the data
    dir."""
    with EmbeddedRedis(tmp_path) as server, command_settings(
            Settings(data_dir=str(tmp_path))) as found:
        assert found.redis_url == server.url


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _exited_owner() -> str:
    """``redis.owner`` text naming a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return f"{process.pid} 12345"


def test_the_data_dir_and_its_files_are_private(tmp_path):
    """A new data dir is 0700 and the append-only file, log, pid, url and owner files 0600;
    a data dir an earlier version left readable by others is made private at start."""
    data = tmp_path / "data"
    with EmbeddedRedis(data) as server:
        redis.Redis.from_url(server.url).set("secret", "x")
        assert _mode(data) == 0o700
        files = [p for p in data.iterdir() if not p.is_socket()]
        assert {"appendonly.aof", "redis.log", "redis.pid", "redis.url", "redis.owner"} <= {
            p.name for p in files}
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    os.chmod(data, 0o755)
    os.chmod(data / "appendonly.aof", 0o644)
    with EmbeddedRedis(data) as server:
        assert redis.Redis.from_url(server.url).get("secret") == b"x"
        assert _mode(data) == 0o700 and _mode(data / "appendonly.aof") == 0o600


def test_a_server_left_running_by_an_exited_owner_is_stopped_and_replaced(tmp_path):
    """A server still running on the data dir after the process that started it exited is
    shut down cleanly (its data kept) and a new one starts, instead of a refusal."""
    left = EmbeddedRedis(tmp_path)
    left.start()
    redis.Redis.from_url(left.url).set("label", "kept")
    (tmp_path / "redis.owner").write_text(_exited_owner())
    try:
        with EmbeddedRedis(tmp_path) as server:
            assert left.process.wait(15) == 0  # a clean shutdown: SIGTERM, not SIGKILL
            assert redis.Redis.from_url(server.url).get("label") == b"kept"
            assert int((tmp_path / "redis.pid").read_text()) == server.process.pid
    finally:
        left.stop()


def test_a_pid_file_naming_another_process_is_stale_and_that_process_untouched(tmp_path):
    """A pid in the pid file that is not a redis-server working in this data dir (another
    program, or a Redis on another data dir) is never signalled: the file is stale."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = EmbeddedRedis(tmp_path / "other")
    other.start()
    data = tmp_path / "data"
    data.mkdir()
    try:
        for pid in (sleeper.pid, other.process.pid):
            (data / "redis.pid").write_text(str(pid))
            (data / "redis.owner").write_text(_exited_owner())
            with EmbeddedRedis(data) as server:
                assert server.process.pid != pid
            assert sleeper.poll() is None and other.running()
    finally:
        sleeper.kill()
        sleeper.wait()
        other.stop()
