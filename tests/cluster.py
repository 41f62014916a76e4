"""The Redis Cluster the tests run against: 3 masters (``replicas`` replicas each) started from
the venv's redis-server and redis-cli (``taskrank.queue.local_cluster``), once per session,
beside the single Redis that then holds RQ's queue.

A test module chooses its data stores with ``pytestmark = pytest.mark.backends(...)``:
``both_backends`` runs each of its tests that uses the ``settings`` fixture once on the
single Redis and once on the cluster.  Tests that choose none run on ``pytest --backend``
(default ``single``); ``pytest --backend cluster`` runs them all on the cluster.
"""

from __future__ import annotations

import pytest

from taskrank.queue.local_cluster import LocalCluster
from taskrank.queue.settings import Settings

BACKENDS = ("single", "cluster")
both_backends = pytest.mark.backends(*BACKENDS)
cluster_only = pytest.mark.backends("cluster")


def start_cluster(tmp_path_factory: pytest.TempPathFactory, replicas: int = 0) -> LocalCluster:
    """A started cluster of 3 masters with its data under a fresh tmp dir."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=replicas)
    cluster.start()
    return cluster


def redis_env(settings: Settings) -> dict[str, str]:
    """The TASKRANK_* variables that point a command at ``settings``' data store and RQ."""
    return {name: value for name, value in settings.as_env().items()
            if name in ("TASKRANK_REDIS_URL", "TASKRANK_REDIS_CLUSTER", "TASKRANK_RQ_REDIS_URL")}
