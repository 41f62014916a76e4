"""The durability check at start reads every server holding data: each master of a cluster."""

from __future__ import annotations

from taskrank.queue.connection import masters
from taskrank.queue.durability import check_durability, durability_problems
from tests.cluster import both_backends

pytestmark = both_backends


def test_a_server_that_can_lose_writes_is_named(r, backend):
    """The test servers keep their writes (no problem); one master set to ``appendfsync no``
    is a problem, on a cluster naming that master, and refuses a start that requires
    durability."""
    assert durability_problems(r) == []
    last = masters(r)[-1]
    last.config_set("appendfsync", "no")
    try:
        problems = durability_problems(r)
        assert len(problems) == 1 and "appendfsync is 'no'" in problems[0]
        if backend == "cluster":
            port = last.connection_pool.connection_kwargs["port"]
            assert problems[0].startswith(f"master 127.0.0.1:{port}: ")
        assert check_durability(r, required=True) is False
        assert check_durability(r, required=False) is True
    finally:
        last.config_set("appendfsync", "everysec")
