"""Finding the running server's Redis from a command typed in another shell.

``taskrank serve`` notes where it listens and which Redis it uses (the data store, and the
Redis of RQ's queue when that is another one) in a file of its own under ``TASKRANK_RUN_DIR``
(default ``~/.taskrank/run``), and removes it when it stops.  One-off commands that go
straight to Redis (``token create``, ``ingest --direct``, ``backfill``, ``worker``) then use,
in this order:

1. ``TASKRANK_REDIS_URL`` (with ``TASKRANK_RQ_REDIS_URL``);
2. the embedded Redis running on ``TASKRANK_DATA_DIR``;
3. the running server noted for ``TASKRANK_URL``, or the only running server there is;
4. the data in ``TASKRANK_DATA_DIR`` of a server that is stopped (an embedded Redis is
   started on it for the command);

and otherwise refuse with a message that says what to set: a command never starts a new,
empty Redis that the server would not see.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from taskrank.queue.embedded import EmbeddedRedis
from taskrank.queue.settings import Settings


class NoServerError(RuntimeError):
    """No Redis of a taskrank can be found; the message says what to set."""


def run_dir(settings: Settings) -> Path:
    return Path(settings.run_dir or "~/.taskrank/run").expanduser()


def register(settings: Settings, url: str) -> Path:
    """Note the server at ``url`` with its Redis (``settings.redis_url``, ``rq_redis_url``);
    the note's path."""
    folder = run_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"
    note = {"url": url, "redis_url": settings.redis_url, "rq_redis_url": settings.rq_redis_url,
            "redis_cluster": settings.redis_cluster, "pid": os.getpid(),
            "data_dir": str(Path(settings.data_dir).resolve())}
    # The Redis URL may carry a password: only this user may read the note.
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(note, out)
    os.replace(temporary, path)
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def running_servers(settings: Settings) -> list[dict]:
    """The noted servers whose process still runs (notes of dead ones are removed)."""
    servers = []
    for path in sorted(run_dir(settings).glob("*.json")):
        try:
            note = json.loads(path.read_text())
            os.kill(int(note["pid"]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        servers.append(note)
    return servers


@contextlib.contextmanager
def command_settings(settings: Settings, say: Callable[[str], None] = lambda text: None
                     ) -> Iterator[Settings]:
    """``settings`` pointing at the Redis a one-off command should use (see the module's
    order): its data store and RQ's; ``say`` gets one line when it is a server found
    through its note.  Raises ``NoServerError``."""
    if settings.redis_url:
        yield settings
        return
    embedded = EmbeddedRedis(settings.data_dir, settings.redis_fsync)
    running = embedded.running_url()
    if running:
        yield settings.replace(redis_url=running, redis_cluster=False)
        return
    server = _noted_server(settings)
    if server:
        say(f"using the Redis of the taskrank server at {server['url']} (data dir "
            f"{server['data_dir']}); set TASKRANK_DATA_DIR or TASKRANK_REDIS_URL to choose")
        yield settings.replace(redis_url=server["redis_url"],
                               redis_cluster=server.get("redis_cluster"),
                               rq_redis_url=settings.rq_redis_url or server.get("rq_redis_url"))
        return
    if not _holds_data(embedded.data_dir):
        raise NoServerError(
            f"no running taskrank found: no Redis answers in TASKRANK_DATA_DIR "
            f"({embedded.data_dir}), which holds no data, and no 'taskrank serve' is noted in "
            f"{run_dir(settings)}. Start 'taskrank serve' first, or set TASKRANK_DATA_DIR to "
            "the server's data dir (it prints it at start: 'data in ...') or "
            "TASKRANK_REDIS_URL to its Redis")
    with embedded:  # a stopped server's data: serve it for this command only
        yield settings.replace(redis_url=embedded.url, redis_cluster=False)


def _noted_server(settings: Settings) -> dict | None:
    servers = [note for note in running_servers(settings) if note.get("redis_url")]
    if settings.url:
        matching = [note for note in servers if note["url"].rstrip("/") ==
                    settings.url.rstrip("/")]
        if matching:
            return matching[0]
    if len(servers) > 1:
        listed = "; ".join(f"{note['url']} (data dir {note['data_dir']})" for note in servers)
        raise NoServerError(f"{len(servers)} taskrank servers run: {listed}. Set TASKRANK_URL "
                            "to the one to use, or TASKRANK_DATA_DIR or TASKRANK_REDIS_URL")
    return servers[0] if servers else None


def _holds_data(data_dir: Path) -> bool:
    return (data_dir / "appendonlydir").is_dir() or (data_dir / "appendonly.aof").exists()


def server_url(settings: Settings, default: str = "http://127.0.0.1:8000") -> str:
    """The server client commands talk to: ``TASKRANK_URL``, else the only running server
    noted, else ``default``."""
    if settings.url:
        return settings.url
    servers = running_servers(settings)
    return servers[0]["url"] if len(servers) == 1 else default
