"""What redis-py's cluster client raises while a master fails over is a 503 problem with
Retry-After on both paths of the hot routes and on the Flask views, never a 500.  The errors
are injected here (a cluster failing over on demand is tests/faults/test_cluster_failover.py)."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)

from taskrank.queue import tasks as queue_tasks
from taskrank.server import create_app
from taskrank.server import items as item_views
from tests.server.helpers import assert_problem, make_expert, make_project, next_task

FAILOVER_ERRORS = [
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    MasterDownError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
    TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    ClusterError("TTL exhausted."),
    MovedError("3999 127.0.0.1:6381"),
    ReadOnlyError("READONLY You can't write against a read only replica."),
    SlotNotCoveredError("Slot 3999 not covered by the cluster"),
    RedisClusterUnreachableError("no node of the cluster could be reached"),
]


def raising(error: Exception):
    def call(*args: object, **kwargs: object) -> None:
        raise error
    return call


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("error", FAILOVER_ERRORS, ids=lambda error: type(error).__name__)
def test_a_cluster_failing_over_is_a_503_problem(settings, client, auth, monkeypatch, fast,
                                                 error):
    """The claim of tasks/next (a hot route) and an item batch (a Flask view) meeting a
    failover error: 503, problem+json, Retry-After, a detail naming what happened."""
    app = create_app(settings.replace(fast_path=fast)).test_client()
    make_project(client, auth)
    make_expert(client, auth, "e1")
    monkeypatch.setattr(queue_tasks, "lease_tasks", raising(error))
    monkeypatch.setattr(item_views, "ingest", raising(error))
    for response in (next_task(app, auth),
                     app.post("/v1/projects/p1/items", json={"items": [{"id": "i"}]},
                              headers=auth("platform"))):
        assert_problem(response, 503, "failing over", type(error).__name__)
        assert response.headers["Retry-After"] == "1"
