"""The one cache policy (queue/cache.py): bounded staleness, reloads when told or when the
version asked for moves, and the process's TASKRANK_CACHE_SECONDS when no time is given."""

from __future__ import annotations

import pytest

from taskrank.queue import settings as process_settings
from taskrank.queue.cache import TtlCache
from taskrank.queue.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _counter(clock: Clock):
    loads = []

    def load():
        loads.append(clock.now)
        return len(loads)

    return load


def test_ttl_cache_reloads_after_its_time_and_when_told():
    """An entry is reused within its time, reloaded after it or once forgotten; a failed
    load is not cached."""
    clock = Clock()
    load = _counter(clock)
    cache = TtlCache(1.0, clock=clock)
    assert cache.get("k", load) == 1
    clock.now += 0.9
    assert cache.get("k", load) == 1
    clock.now += 0.2
    assert cache.get("k", load) == 2
    cache.forget("k")
    assert cache.get("k", load) == 3

    def boom():
        raise KeyError("no")

    for _ in range(2):
        with pytest.raises(KeyError):
            cache.get("x", boom)
    assert cache.get("x", load) == 4
    assert TtlCache(0.0).get("k", load) == 5 and TtlCache(0.0).get("k", load) == 6


def test_a_versioned_entry_lives_as_long_as_its_version():
    """Asking for another version reloads at once, however fresh the entry is; the same
    version is never reloaded, however old the entry is (even with caching off)."""
    clock = Clock()
    load = _counter(clock)
    for seconds in (60.0, 0.0):
        cache = TtlCache(seconds, clock=clock)
        first = cache.get("p", load, version=1)
        clock.now += 3600
        assert cache.get("p", load, version=1) == first
        assert cache.get("p", load, version=2) == first + 1
        assert cache.get("p", load, version=2) == first + 1


@pytest.fixture
def installed():
    """Restores the process's installed settings after the test."""
    before = process_settings._installed
    yield process_settings.install
    process_settings._installed = before


def test_without_a_time_the_cache_follows_the_installed_settings(installed):
    """A module-level cache reads TASKRANK_CACHE_SECONDS of the settings the process
    installed (0: every lookup loads)."""
    clock = Clock()
    load = _counter(clock)
    cache = TtlCache(clock=clock)
    installed(Settings(cache_seconds=5.0))
    assert cache.get("k", load) == 1
    clock.now += 4.0
    assert cache.get("k", load) == 1
    installed(Settings(cache_seconds=0.0))
    assert cache.get("k", load) == 2


def test_a_cache_may_answer_its_last_value_while_the_store_cannot():
    """With ``stale_on``, a reload failing with one of those errors answers the entry it
    would have replaced, up to ``stale_seconds`` old; past that, with no entry, or with
    another error, the error is raised."""
    clock = Clock()
    cache = TtlCache(1.0, clock=clock, stale_on=(ConnectionError,), stale_seconds=60.0)
    assert cache.get("k", lambda: "fresh") == "fresh"

    def down():
        raise ConnectionError("the master is failing over")

    def broken():
        raise ValueError("not an outage")

    clock.now += 30
    assert cache.get("k", down) == "fresh"
    with pytest.raises(ValueError):
        cache.get("k", broken)
    with pytest.raises(ConnectionError):
        cache.get("other", down)
    clock.now += 31
    with pytest.raises(ConnectionError):
        cache.get("k", down)
    assert cache.get("k", lambda: "back") == "back"
