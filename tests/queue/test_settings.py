"""The serving knobs of queue/settings.py read from TASKRANK_* variables."""

from __future__ import annotations

import pytest

from taskrank.queue.settings import Settings, SettingsError


def test_cache_seconds_and_fast_path_come_from_the_environment():
    """TASKRANK_CACHE_SECONDS (0 turns the caches off) and TASKRANK_FAST_PATH are read, and
    survive the round trip to a child process's environment."""
    settings = Settings.from_env({"TASKRANK_CACHE_SECONDS": "0", "TASKRANK_FAST_PATH": "off"})
    assert (settings.cache_seconds, settings.fast_path) == (0.0, False)
    assert Settings.from_env(settings.as_env()) == settings
    assert (Settings().cache_seconds, Settings().fast_path) == (1.0, True)


@pytest.mark.parametrize("value", ["-1", "61", "soon"])
def test_a_cache_time_out_of_range_is_refused(value):
    """A negative, too long or non-numeric cache time is a SettingsError naming the variable."""
    with pytest.raises(SettingsError, match="TASKRANK_CACHE_SECONDS"):
        Settings.from_env({"TASKRANK_CACHE_SECONDS": value})


def test_a_process_reads_the_settings_it_installed(monkeypatch):
    """``current()`` answers the installed settings; before any install, the environment's,
    read once."""
    from taskrank.queue import settings as process

    monkeypatch.setattr(process, "_installed", None)
    monkeypatch.setenv("TASKRANK_RESCORE_CHUNK", "77")
    assert process.current().rescore_chunk == 77
    monkeypatch.setenv("TASKRANK_RESCORE_CHUNK", "88")
    assert process.current().rescore_chunk == 77
    installed = Settings(rescore_chunk=5)
    assert process.install(installed) is installed and process.current() is installed


def test_webhook_settings_come_from_the_environment():
    """TASKRANK_WEBHOOK_RETRY_INTERVALS (seconds per retry; empty: no retry), _TIMEOUT and
    _DELIVERIES_KEPT are read and survive the round trip to a child process."""
    settings = Settings.from_env({"TASKRANK_WEBHOOK_RETRY_INTERVALS": "0, 1.5,60",
                                  "TASKRANK_WEBHOOK_TIMEOUT": "2.5",
                                  "TASKRANK_WEBHOOK_DELIVERIES_KEPT": "7"})
    assert settings.retry_intervals == (0.0, 1.5, 60.0)
    assert (settings.webhook_timeout, settings.webhook_deliveries_kept) == (2.5, 7)
    assert Settings.from_env(settings.as_env()) == settings
    assert Settings.from_env({"TASKRANK_WEBHOOK_RETRY_INTERVALS": ""}).retry_intervals == ()
    assert Settings().retry_intervals == (5, 300, 1800, 7200, 18000, 36000)


@pytest.mark.parametrize(("name", "value"), [
    ("TASKRANK_WEBHOOK_RETRY_INTERVALS", "5,soon"), ("TASKRANK_WEBHOOK_RETRY_INTERVALS", "-1"),
    ("TASKRANK_WEBHOOK_RETRY_INTERVALS", "1e9"), ("TASKRANK_WEBHOOK_TIMEOUT", "0"),
    ("TASKRANK_WEBHOOK_DELIVERIES_KEPT", "0")])
def test_a_bad_webhook_setting_is_refused(name, value):
    """A retry interval that is no number, negative or over a week, a timeout of 0 or an
    empty deliveries page is a SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_cluster_settings_come_from_the_environment():
    """TASKRANK_REDIS_CLUSTER is 1, 0 or auto (unset: auto, asked at run time) and
    TASKRANK_RQ_REDIS_URL a Redis URL; both survive the round trip to a child process."""
    settings = Settings.from_env({"TASKRANK_REDIS_URL": "redis://h:7000",
                                  "TASKRANK_REDIS_CLUSTER": "1",
                                  "TASKRANK_RQ_REDIS_URL": "redis://q:6379/0"})
    assert (settings.redis_cluster, settings.rq_redis_url) == (True, "redis://q:6379/0")
    assert Settings.from_env(settings.as_env()) == settings
    assert Settings.from_env({"TASKRANK_REDIS_CLUSTER": "0"}).redis_cluster is False
    assert Settings.from_env({"TASKRANK_REDIS_CLUSTER": "auto"}).redis_cluster is None
    assert Settings().redis_cluster is None and Settings().rq_redis_url is None


@pytest.mark.parametrize(("env", "name"), [
    ({"TASKRANK_REDIS_CLUSTER": "maybe"}, "TASKRANK_REDIS_CLUSTER"),
    ({"TASKRANK_REDIS_CLUSTER": "1"}, "TASKRANK_REDIS_URL"),
    ({"TASKRANK_REDIS_CLUSTER": "1", "TASKRANK_REDIS_URL": "unix:///tmp/r.sock"},
     "TASKRANK_REDIS_URL"),
    ({"TASKRANK_RQ_REDIS_URL": "localhost:6379"}, "TASKRANK_RQ_REDIS_URL")])
def test_a_bad_cluster_setting_is_refused(env, name):
    """A cluster flag that is no yes/no/auto, a cluster without a TCP Redis URL, or an RQ
    Redis that is no URL is a SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_wait_settings_come_from_the_environment():
    """TASKRANK_REDIS_WAIT_REPLICAS (a number, or auto: None) and _WAIT_TIMEOUT_MS are read
    and survive the round trip to a child process; auto and 500 ms by default."""
    settings = Settings.from_env({"TASKRANK_REDIS_WAIT_REPLICAS": "2",
                                  "TASKRANK_REDIS_WAIT_TIMEOUT_MS": "250"})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (2, 250)
    assert Settings.from_env(settings.as_env()) == settings
    assert Settings.from_env({"TASKRANK_REDIS_WAIT_REPLICAS": "auto"}).redis_wait_replicas is None
    assert (Settings().redis_wait_replicas, Settings().redis_wait_timeout_ms) == (None, 500)


@pytest.mark.parametrize(("name", "value"), [
    ("TASKRANK_REDIS_WAIT_REPLICAS", "one"), ("TASKRANK_REDIS_WAIT_REPLICAS", "-1"),
    ("TASKRANK_REDIS_WAIT_TIMEOUT_MS", "0"), ("TASKRANK_REDIS_WAIT_TIMEOUT_MS", "5000")])
def test_a_bad_wait_setting_is_refused(name, value):
    """A replica count that is no number or negative, a WAIT timeout of 0 (Redis: forever)
    or beyond the clients' socket timeout is a SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_cluster_may_be_named_by_several_nodes():
    """TASKRANK_REDIS_URL may list a cluster's nodes, comma-separated; a list that holds
    something else than redis:// URLs, or is said to be no cluster, is refused."""
    nodes = "redis://10.0.0.1:7000, redis://10.0.0.2:7000"
    assert Settings(redis_url=nodes).redis_url == nodes
    for bad in ({"redis_url": "redis://10.0.0.1:7000,unix:///tmp/r.sock"},
                {"redis_url": nodes, "redis_cluster": False}):
        with pytest.raises(SettingsError, match="TASKRANK_REDIS_URL lists several nodes"):
            Settings(**bad)
