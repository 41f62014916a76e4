"""``send_many``: many commands in one write, replies in order, errors raised."""

from __future__ import annotations

import pytest
import redis

from taskrank.queue.connection import send_many


def test_replies_come_back_in_order(r):
    """Mixed commands answer exactly what one call each would (decoded, nested, nil)."""
    r.hset("h", mapping={"a": "1", "b": "x" * 70_000})  # a reply larger than one recv
    r.zadd("z", {"m": 1.5})
    replies = send_many(r, [("HMGET", "h", "a", "b", "c"), ("ZADD", "z", "XX", 2.5, "m"),
                            ("ZADD", "z", "XX", 3.0, "absent"), ("ZCARD", "z")])
    assert replies == [["1", "x" * 70_000, None], 0, 0, 1]
    assert r.zscore("z", "m") == 2.5
    assert r.zrange("z", 0, -1) == ["m"]  # XX never adds


def test_an_error_reply_raises_and_the_client_stays_usable(r):
    """A wrong-type error is raised as ResponseError; later calls still work."""
    r.set("s", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send_many(r, [("GET", "s"), ("ZADD", "s", "XX", 1, "m")])
    assert send_many(r, [("GET", "s")]) == ["v"]
    assert r.get("s") == "v"
