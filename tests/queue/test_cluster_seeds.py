"""A Redis Cluster named by several of its nodes (TASKRANK_REDIS_URL comma-separated): a
client starts from any node listed that answers, so a process started while one is down
(a failed master) still finds the cluster."""

from __future__ import annotations

from redis.cluster import RedisCluster

from taskrank.queue.connection import connect, is_cluster
from taskrank.queue.embedded import free_port
from taskrank.queue.settings import Settings


def test_a_client_starts_from_any_node_listed(redis_cluster):
    """The first node listed refuses connections: the client starts from the next one,
    and the list alone says it is a cluster (nobody is asked)."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()},{redis_cluster.url}")
    assert is_cluster(settings)
    with connect(settings) as r:
        assert isinstance(r, RedisCluster)
        assert len(r.get_primaries()) == 3
        r.set("taskrank:{seeds}:probe", "1")
        assert r.get("taskrank:{seeds}:probe") == "1"
        r.delete("taskrank:{seeds}:probe")
