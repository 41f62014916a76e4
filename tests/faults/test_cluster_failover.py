"""A Redis Cluster of 3 masters with a replica each under gunicorn (RQ on a single Redis):
a master SIGKILLed while experts label fails over, its project answers 503 problems and
then recovers by itself while the other masters' projects keep being served, a job on
it rides the failover out, and no acknowledged label is lost or doubled; a label whose
replica is paused is not acknowledged (503), and is once the replica is back."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from taskrank.client import Client
from taskrank.queue import keys as K
from taskrank.queue import settings as process_settings
from taskrank.queue.clock import utc_day
from taskrank.queue.connection import connect, connect_rq
from taskrank.queue.embedded import free_port
from taskrank.queue.enqueue import RETRY
from taskrank.queue.local_cluster import LocalCluster
from taskrank.queue.readiness import OK, readiness
from taskrank.queue.retrain import retrain
from taskrank.queue.tokens import create_token, hash_token
from taskrank.queue.worker import task_queue
from tests.faults.stack import (
    HTTP_TIMEOUT,
    START_TIMEOUT,
    Labeler,
    WebServer,
    check_acknowledged_kept,
    export_labels,
    is_problem_503,
    setup_project,
)
from tests.waits import wait_for

NODE_TIMEOUT_MS = 1000  # a master is failed over about 2-3 s after its death
HANG_BOUND = 3.0  # s: no request is held longer, failover or not (gunicorn's limit is 30 s)
RECOVERY_BOUND = 3.0  # s from the replica's promotion to the project's first success
FAILOVER_BOUND = 15.0  # s from the kill to the promotion


class Topology:
    """Which node holds what: the master of a key's slot, its replica, each node's pid."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        with RedisCluster.from_url(cluster.url, decode_responses=True) as client:
            nodes = client.cluster_nodes()
        self.slots = [(int(first), int(last), int(address.rpartition(":")[2]))
                      for address, node in nodes.items() for first, last in node["slots"]]
        # Replication starts after the cluster serves: wait until each master streams to
        # its replica (else 'auto' would wait for none).
        self.replicas = wait_for(self._online_replicas, 30, "every master's replica online")

    def _online_replicas(self) -> dict[int, int] | None:
        """master port -> the port of its replica online, or None while one has none."""
        found = {}
        for port in {port for _, _, port in self.slots}:
            with redis.Redis(port=port, decode_responses=True) as node:
                role = node.execute_command("ROLE")
            if role[0] != "master" or not role[2]:
                return None
            found[port] = int(role[2][0][1])
        return found

    def master_of(self, key: str) -> int:
        slot = key_slot(key.encode())
        return next(port for first, last, port in self.slots if first <= slot <= last)

    def pid(self, port: int) -> int:
        return self.cluster.pids[self.cluster.ports.index(port)]

    def replica_of(self, port: int) -> int:
        return self.replicas[port]

    def project_on(self, port: int) -> str:
        return next(f"p{n}" for n in range(100) if self.master_of(K.project_key(f"p{n}")) == port)

    def experts_off(self, port: int, count: int) -> list[str]:
        """Experts none of whose global keys (the expert, today's hours) is on ``port``."""
        found = [f"e{n}" for n in range(100) if port not in (
            self.master_of(K.expert_key(f"e{n}")),
            self.master_of(K.expert_day_key(f"e{n}", utc_day(time.time()))))]
        return found[:count]


def platform_token_on(r, topology: Topology, port: int) -> str:
    """A new platform token whose key lies on the master at ``port``."""
    while True:
        token = create_token(r, "platform")
        if topology.master_of(K.token_key(hash_token(token))) == port:
            return token


class TimedLabeler(Labeler):
    """A Labeler that also keeps how long each request took."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []

    def request(self, *args: object, **kwargs: object):  # noqa: ANN201 - Labeler's
        started = time.monotonic()
        try:
            return super().request(*args, **kwargs)
        finally:
            self.durations.append(time.monotonic() - started)


@pytest.fixture
def cluster(tmp_path):
    """3 masters with a replica each; every node resumed and stopped after the test."""
    started = LocalCluster(tmp_path / "cluster", masters=3, replicas=1,
                           node_timeout_ms=NODE_TIMEOUT_MS)
    started.start()
    yield started
    for pid in started.pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    started.stop()


def web_on(stack, cluster: LocalCluster, **env: str) -> WebServer:
    """gunicorn (2 workers) and one RQ worker on ``cluster``, RQ on an embedded Redis."""
    processes = stack.stack
    processes.settings = processes.settings.replace(redis_url=cluster.nodes_url,
                                                    redis_cluster=True)
    processes.start_redis(stack.tmp_path / "rq", port=free_port(), timeout=START_TIMEOUT,
                          queue_only=True)
    processes.start_workers(1)
    web = processes.start_web(workers=2, port=0, graceful_timeout=5, **env)
    return WebServer(web.wait_ready(START_TIMEOUT, 2))


def add_project(web: WebServer, pid: str, experts: list[str]) -> None:
    setup_project(web.api, pid, n_items=400, experts=0, capacity=2)
    for eid in experts:
        status, _, body = web.api.send("PUT", f"/v1/experts/{eid}", {"capacity": 2})
        assert status in (200, 201), body


def promoted(port: int) -> bool:
    with contextlib.suppress(redis.RedisError), redis.Redis(port=port, socket_timeout=1) as node:
        return node.execute_command("ROLE")[0] in (b"master", "master")
    return False


def test_killed_master_fails_over_and_its_project_recovers(stack, cluster, monkeypatch):
    """Labelers in three projects, one per master; SIGKILL of one master: every answer is a
    2xx/4xx or a 503 problem with Retry-After, none held beyond HANG_BOUND; the other
    projects are served throughout (the platform's token on the dead master, the web tier
    keeping it), the victim's project answers again within
    RECOVERY_BOUND of the replica's promotion, with no human action; every label answered
    201 is exported once, counted, and no other."""
    topology = Topology(cluster)
    masters = sorted({port for _, _, port in topology.slots})
    victim = masters[0]
    projects = [topology.project_on(port) for port in masters]  # projects[0]: the victim's
    experts = topology.experts_off(victim, 4)
    web = web_on(stack, cluster)
    for pid in projects:
        add_project(web, pid, experts)
    # A client that only probes readiness, as a health checker's web process may.
    settings = stack.stack.settings
    monkeypatch.setattr(process_settings, "_installed", settings)
    watcher = connect(settings, fail_fast=True)
    assert readiness(watcher, "taskrank")["redis"]["status"] == OK
    # The platform's token lives on the master about to die: the web processes' caches
    # keep it while that master cannot be asked.
    api = Client(web.web.url, platform_token_on(watcher, topology, victim),
                 timeout=HTTP_TIMEOUT)

    stop = threading.Event()
    labelers = {pid: [TimedLabeler(api, eid, stop, pid=pid, budget=40)
                      for eid in (experts[:2] if pid == projects[0] else experts[2:3]
                                  if pid == projects[1] else experts[3:])]
                for pid in projects}
    everyone = [labeler for group in labelers.values() for labeler in group]
    for labeler in everyone:
        labeler.start()
    try:
        wait_for(lambda: all(len(x.acked) >= 5 for x in everyone), 30, "5 labels each")
        acked_before = {pid: {tid for x in group for tid in list(x.acked)}
                        for pid, group in labelers.items()}
        killed = time.monotonic()
        os.kill(topology.pid(victim), signal.SIGKILL)
        # A job on the dead master's project, run by the worker during the failover.
        job = task_queue(settings, connect_rq(settings)).enqueue(retrain, projects[0],
                                                                   retry=RETRY)
        wait_for(lambda: promoted(topology.replica_of(victim)), FAILOVER_BOUND,
                 "the replica's promotion")
        promotion = time.monotonic()
        wait_for(lambda: all(a.at > promotion + RECOVERY_BOUND + 1 for x in everyone
                             for a in x.answers[-1:]), 20, "answers after the recovery")
    finally:
        stop.set()
        for labeler in everyone:
            labeler.join(20)

    answers = sorted((a for x in everyone for a in x.answers), key=lambda a: a.at)
    wrong = [a for a in answers if a.status >= 500 and not a.is_problem_503()]
    assert not wrong, f"5xx other than a 503 problem: {wrong[:3]}"
    assert not [lost for x in everyone for lost in x.lost], "a connection was dropped"
    longest = max(d for x in everyone for d in x.durations)
    assert longest < HANG_BOUND, f"a request was held {longest:.1f} s"

    victims = [a for x in labelers[projects[0]] for a in x.answers]
    assert [a for a in victims if a.at > killed and a.is_problem_503()], "no 503 met"
    first_ok = min(a.at for a in victims if a.at > promotion and a.status < 300)
    assert first_ok - promotion < RECOVERY_BOUND, f"first success {first_ok - promotion:.1f} s"
    late = [a for a in victims if a.at > promotion + RECOVERY_BOUND and a.status >= 500]
    assert not late, f"still failing after the recovery: {late[:3]}"
    for pid in projects[1:]:  # other masters: served before, during and after
        others = [a for x in labelers[pid] for a in x.answers]
        assert not [a for a in others if a.status >= 500], f"{pid} failed: {others[-3:]}"
        assert [a for a in others if killed < a.at < promotion and a.status == 201], \
            f"{pid} got no label acknowledged during the failover"

    for labeler in everyone:
        labeler.settle(timeout=15)
    for pid, group in labelers.items():
        check_acknowledged_kept(web.api, {tid for x in group for tid in x.acked},
                                acked_before[pid], pid)
    wait_for(lambda: readiness(watcher, "taskrank")["redis"]["status"] == OK, 5,
             "a client that only probes readiness to find the new master")
    watcher.close()
    api.close()
    wait_for(lambda: job.get_status(refresh=True) in ("finished", "failed"), 30, "the job")
    assert job.get_status() == "finished" and job.retries_left == RETRY.max, \
        f"the job did not ride the failover out: {job.get_status()}, {job.exc_info}"
    assert all(child.running() for child in stack.stack.children), "a process died"


def test_label_waits_for_a_replica(stack, cluster):
    """With the project's replica paused (SIGSTOP), a label is stored on the master but
    answered 503 with Retry-After, and so is its replay (which writes nothing: a WAIT
    without the fence would pass at once); once the replica runs again, the replay is
    answered 201, and the export holds the label once."""
    topology = Topology(cluster)
    master = min(port for _, _, port in topology.slots)
    pid = topology.project_on(master)
    web = web_on(stack, cluster, TASKRANK_REDIS_WAIT_TIMEOUT_MS="300")
    add_project(web, pid, ["e0"])
    status, _, body = web.api.send("POST", f"/v1/projects/{pid}/tasks/next",
                                   {"expert_id": "e0"})
    assert status == 200, body
    tid = body["task"]["id"]
    send = [f"/v1/tasks/{tid}/label", {"label": "pos"}, {"Idempotency-Key": "k-1"}]

    replica = topology.pid(topology.replica_of(master))
    os.kill(replica, signal.SIGSTOP)
    try:
        for _ in range(2):  # the label, then its replay
            status, headers, body = web.api.send("POST", *send)
            assert is_problem_503(status, headers, body), (status, body)
            assert "not yet on a replica" in body["detail"], body
        stored = [r for r in export_labels(web.api, pid) if r["task_id"] == tid]
        assert len(stored) == 1, "the label is on the master already"
    finally:
        os.kill(replica, signal.SIGCONT)

    status, _, body = web.api.send("POST", *send)
    assert status == 201, body
    assert body["task_id"] == tid and body["label"] == "pos" and body["counted"] is True
    records = [r for r in export_labels(web.api, pid) if r["task_id"] == tid]
    assert len(records) == 1 and records[0]["counted"], records
