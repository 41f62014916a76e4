"""The embedded Redis: a real server whose data survives a stop and a start."""

from __future__ import annotations

import redis

from taskrank.queue.embedded import EmbeddedRedis, redis_url_for
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
    """redis_url_for finds the embedded server another process started."""
    with EmbeddedRedis(tmp_path) as server, redis_url_for(
            Settings(data_dir=str(tmp_path))) as url:
        assert url == server.url


def test_one_off_commands_start_and_stop_a_server(tmp_path):
    """With nothing running, redis_url_for starts a server for the command and stops it."""
    with redis_url_for(Settings(data_dir=str(tmp_path))) as url:
        redis.Redis.from_url(url).set("k", "v")
    with EmbeddedRedis(tmp_path) as server:
        assert redis.Redis.from_url(server.url).get("k") == b"v"
