"""``send_many``: many commands in one write, replies in order, errors raised; on a cluster,
to the master of the keys' slot."""

from __future__ import annotations

import pytest
import redis

from taskrank.queue.connection import send_many
from tests.cluster import both_backends

pytestmark = both_backends

# One hash tag: one slot, so these keys may share a batch on a cluster too.
H, Z, S = "{t}h", "{t}z", "{t}s"


def test_replies_come_back_in_order(r):
    """Mixed commands answer exactly what one call each would (decoded, nested, nil)."""
    r.hset(H, mapping={"a": "1", "b": "x" * 70_000})  # a reply larger than one recv
    r.zadd(Z, {"m": 1.5})
    replies = send_many(r, [("HMGET", H, "a", "b", "c"), ("ZADD", Z, "XX", 2.5, "m"),
                            ("ZADD", Z, "XX", 3.0, "absent"), ("ZCARD", Z)])
    assert replies == [["1", "x" * 70_000, None], 0, 0, 1]
    assert r.zscore(Z, "m") == 2.5
    assert r.zrange(Z, 0, -1) == ["m"]  # XX never adds


def test_an_error_reply_raises_and_the_client_stays_usable(r):
    """A wrong-type error is raised as ResponseError; later calls still work."""
    r.set(S, "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send_many(r, [("GET", S), ("ZADD", S, "XX", 1, "m")])
    assert send_many(r, [("GET", S)]) == ["v"]
    assert r.get(S) == "v"


def test_a_key_of_another_slot_is_refused_on_a_cluster(r, backend):
    """On a cluster a batch goes to the master of its first key: a key of a slot that
    master does not hold answers MOVED, raised (never a silent miss)."""
    if backend != "cluster":
        pytest.skip("a single Redis holds every slot")
    others = [key for key in (f"{{u{n}}}x" for n in range(20))
              if r.get_node_from_key(key) != r.get_node_from_key(H)]
    with pytest.raises(redis.ResponseError, match="MOVED"):
        send_many(r, [("GET", H), ("GET", others[0])])
