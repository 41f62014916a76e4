"""Experts (queue/experts.py): the best experts per tag the claim's hold-back reads, kept
under the one cache policy."""

from __future__ import annotations

from taskrank.queue import keys as K
from taskrank.queue.experts import best_experts_by_tag, best_experts_cache, put_expert


def test_best_experts_per_tag_are_cached_until_a_declaration_here(r, monkeypatch):
    """The table ranks active experts by fit; a change made elsewhere (here: written to
    Redis directly) waits for the cache time, a declaration through this process is seen
    at once."""
    monkeypatch.setattr(best_experts_cache, "seconds", 60.0)  # no slow machine expires it
    best_experts_cache.clear()
    put_expert(r, "a", {"skills": {"onco": 0.6}, "capacity": 2})
    put_expert(r, "b", {"skills": {"onco": 0.9}, "capacity": 3})
    put_expert(r, "off", {"skills": {"onco": 0.99}, "active": False})
    assert best_experts_by_tag(r) == {"onco": [["b", 0.9, 3], ["a", 0.6, 2]]}
    r.hset(K.expert_key("a"), "active", 0)  # as another process would, without a PUT
    assert [row[0] for row in best_experts_by_tag(r)["onco"]] == ["b", "a"]
    put_expert(r, "c", {"skills": {"onco": 0.7}, "capacity": 1})
    assert [row[0] for row in best_experts_by_tag(r)["onco"]] == ["b", "c"]
