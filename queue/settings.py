"""The one settings object: every knob is a ``TASKRANK_*`` environment variable, read once.

This is the only module of ``queue/`` that reads the environment.  A process builds its
``Settings`` once and installs them (``install``): the worker before RQ forks a work horse per
job, the app factory for a web process.  Jobs and the per-process caches read them back with
``current()``, so an RQ job needs no settings among its arguments (jobs already queued keep
their arguments, and a job's arguments, stored in Redis, never carry the admin token).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


class SettingsError(ValueError):
    """A ``TASKRANK_*`` variable has a value that cannot be used."""


_TRUE = {"1", "true", "yes", "on"}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; tests build it directly, processes call ``from_env()``."""

    redis_url: str | None = None  # None: start the embedded Redis under data_dir
    # Whether redis_url is a Redis Cluster: None asks the server once per process (INFO
    # cluster); True or False says so (the embedded Redis is started with False)
    redis_cluster: bool | None = None
    # The single Redis RQ runs on (RQ does not support Cluster); None: redis_url's server
    # when that is no cluster (`taskrank serve` on a cluster starts an embedded one for RQ)
    rq_redis_url: str | None = None
    # Replicas that must hold a write before an answer acknowledges it (Redis WAIT; see
    # queue/replication.py): None is 'auto' (on a Redis Cluster 1 while the project's
    # master has a replica online, else 0; on a single Redis 0); 0 waits for none
    redis_wait_replicas: int | None = None
    redis_wait_timeout_ms: int = 500  # how long WAIT may block before the answer is a 503
    data_dir: str = "./var"
    admin_token: str | None = None  # accepted as an admin bearer token when set
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 2  # gunicorn worker processes started by `taskrank serve`
    rq_workers: int = 1  # RQ worker processes started by `taskrank serve`
    # niceness of RQ worker processes (0-19): on a machine shared with the web tier, the
    # retrains and re-scores take the CPU the requests leave
    worker_nice: int = 10
    redis_fsync: str = "always"  # appendfsync of the embedded Redis: always | everysec
    require_durable_redis: bool = False  # refuse to start on a Redis that can lose labels
    max_batch_items: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    claim_depth: int = 32  # candidates read from each of an expert's pool sets per claim
    # seconds a web process keeps a token's role, a project and an expert for the next-task
    # and label routes (0: read them on every request)
    cache_seconds: float = 1.0
    fast_path: bool = True  # serve tasks/next and label without Flask's machinery (server/hot.py)
    sweep_interval: float = 30.0  # seconds between lease sweeps by a worker
    model_versions_kept: int = 3
    rescore_chunk: int = 20_000  # pending items per re-score job
    queue_name: str = "taskrank"
    metrics_public: bool = False  # GET /metrics without a token (for an internal scraper)
    log_level: str = "INFO"
    # webhooks: seconds before each retry of a failed delivery (comma-separated; their
    # count is the number of retries), the HTTP timeout of one attempt, deliveries listed
    webhook_retry_intervals: str = "5,300,1800,7200,18000,36000"
    webhook_timeout: float = 15.0
    webhook_deliveries_kept: int = 100
    # client commands: server to talk to (None: the one running server noted in run_dir,
    # else http://127.0.0.1:8000; queue/running.py)
    url: str | None = None
    token: str | None = None  # client commands: bearer token
    # where `taskrank serve` notes its URL and Redis for commands in other shells ('':
    # ~/.taskrank/run)
    run_dir: str = ""

    def __post_init__(self) -> None:
        if self.redis_fsync not in ("always", "everysec"):
            raise SettingsError(
                f"TASKRANK_REDIS_FSYNC must be 'always' or 'everysec', got {self.redis_fsync!r}"
            )
        for name in ("port", "web_workers", "rq_workers", "max_batch_items", "max_body_bytes",
                     "claim_depth", "model_versions_kept", "rescore_chunk",
                     "webhook_deliveries_kept"):
            value = getattr(self, name)
            if value < 1:
                raise SettingsError(f"TASKRANK_{name.upper()} must be >= 1, got {value}")
        if not 0 <= self.worker_nice <= 19:
            raise SettingsError(
                f"TASKRANK_WORKER_NICE must be from 0 to 19, got {self.worker_nice}")
        if not 0 <= self.cache_seconds <= 60:
            raise SettingsError(
                f"TASKRANK_CACHE_SECONDS must be from 0 to 60, got {self.cache_seconds}")
        if not 0 < self.webhook_timeout <= 300:
            raise SettingsError(
                f"TASKRANK_WEBHOOK_TIMEOUT must be > 0 and at most 300, got {self.webhook_timeout}")
        self.retry_intervals  # noqa: B018 - checks TASKRANK_WEBHOOK_RETRY_INTERVALS
        self._check_redis_urls()
        self._check_wait()

    def _check_redis_urls(self) -> None:
        if self.rq_redis_url is not None and not self.rq_redis_url.startswith(_REDIS_SCHEMES):
            raise SettingsError("TASKRANK_RQ_REDIS_URL must be a redis://, rediss:// or "
                                f"unix:// URL of a single Redis, got {self.rq_redis_url!r}")
        if self.redis_cluster and not (self.redis_url or "").startswith(_REDIS_SCHEMES[:2]):
            raise SettingsError("TASKRANK_REDIS_CLUSTER=1 needs TASKRANK_REDIS_URL set to a "
                                "redis:// or rediss:// URL of one of the cluster's nodes, got "
                                f"{self.redis_url!r}")
        nodes = (self.redis_url or "").split(",")
        if len(nodes) > 1 and (self.redis_cluster is False or not all(
                node.strip().startswith(_REDIS_SCHEMES[:2]) for node in nodes)):
            raise SettingsError("TASKRANK_REDIS_URL lists several nodes: they must be "
                                "redis:// or rediss:// URLs of one Redis Cluster's nodes, "
                                f"comma-separated, got {self.redis_url!r}")

    def _check_wait(self) -> None:
        if self.redis_wait_replicas is not None and not 0 <= self.redis_wait_replicas <= 16:
            raise SettingsError("TASKRANK_REDIS_WAIT_REPLICAS must be auto or from 0 to 16, "
                                f"got {self.redis_wait_replicas}")
        # Below the clients' 5 s socket timeout, so a WAIT never reads as a dead connection.
        if not 1 <= self.redis_wait_timeout_ms <= 4000:
            raise SettingsError("TASKRANK_REDIS_WAIT_TIMEOUT_MS must be from 1 to 4000, got "
                                f"{self.redis_wait_timeout_ms}")

    @property
    def retry_intervals(self) -> tuple[float, ...]:
        """Seconds before each retry of a webhook delivery (empty: one attempt only)."""
        try:
            intervals = tuple(float(part) for part in self.webhook_retry_intervals.split(",")
                              if part.strip())
        except ValueError:
            intervals = (-1.0,)
        if any(not 0 <= value <= 7 * 86400 for value in intervals) or len(intervals) > 50:
            raise SettingsError(
                "TASKRANK_WEBHOOK_RETRY_INTERVALS must be up to 50 comma-separated seconds "
                f"from 0 to 604800, got {self.webhook_retry_intervals!r}")
        return intervals

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``TASKRANK_<FIELD>`` variables; unset ones keep their default."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = environ.get(f"TASKRANK_{field.name.upper()}")
            if raw is not None:
                values[field.name] = _parse(field.name, field.type, raw)
        return cls(**values)

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (command-line overrides)."""
        return dataclasses.replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The variables that recreate these settings in a child process."""
        env = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                env[f"TASKRANK_{field.name.upper()}"] = _format(value)
        return env


def _parse(name: str, kind: str, raw: str) -> object:
    var = f"TASKRANK_{name.upper()}"
    if kind in ("bool", "bool | None"):
        value = raw.strip().lower()
        if kind == "bool | None" and value in ("auto", ""):
            return None  # decided at run time
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        auto = " or auto" if kind == "bool | None" else ""
        raise SettingsError(f"{var} must be 1/0, true/false, yes/no, on/off{auto}, got {raw!r}")
    if kind == "int | None" and raw.strip().lower() in ("auto", ""):
        return None  # decided at run time
    if kind in ("int", "float", "int | None"):
        try:
            return float(raw) if kind == "float" else int(raw)
        except ValueError:
            auto = " or auto" if kind == "int | None" else ""
            raise SettingsError(f"{var} must be a number{auto}, got {raw!r}") from None
    return raw or None if "None" in kind else raw


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


_installed: Settings | None = None


def install(settings: Settings) -> Settings:
    """Make ``settings`` this process's settings (what ``current()`` answers); returns them."""
    global _installed
    _installed = settings
    return settings


def current() -> Settings:
    """This process's settings: the installed ones, else the environment's (read once)."""
    return _installed or install(Settings.from_env())
