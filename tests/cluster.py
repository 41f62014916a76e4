"""The Redis Cluster the tests run against: 3 masters (``replicas`` replicas each) started from
the venv's redis-server and redis-cli (``taskrank.queue.local_cluster``), once per session,
beside the single Redis that then holds RQ's queue.

A test module runs on both data stores with ``pytestmark = both_backends``: each of its
tests that uses the ``settings`` fixture runs once on the single Redis and once on the
cluster.  ``pytest --backend cluster`` runs every such test on the cluster only.
"""

from __future__ import annotations

import pytest

from taskrank.queue.local_cluster import LocalCluster

BACKENDS = ("single", "cluster")
both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def start_cluster(tmp_path_factory: pytest.TempPathFactory, replicas: int = 0) -> LocalCluster:
    """A started cluster of 3 masters with its data under a fresh tmp dir."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=replicas)
    cluster.start()
    return cluster
