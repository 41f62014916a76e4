"""Model versions in Redis: store a trained ranker, switch the current version atomically,
keep a few, and let web processes notice a new version without a restart."""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import time
from dataclasses import dataclass

import numpy as np
import redis
import sklearn

from taskrank.queue import keys as K
from taskrank.queue.cache import TtlCache
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import ModelIncompatibleError
from taskrank.queue.quality import CV_BASIS, exploration_estimate
from taskrank.queue.scoring import ItemInput, model_inputs

FORMAT = 1  # bump when the stored layout changes; older workers then refuse newer models


@dataclass
class LoadedModel:
    """A trained ranker with the input schema it was trained on."""

    ranker: object  # taskrank.learning.ranker.TaskRanker
    models: list[str]  # supplied model names, in input order
    n_features: int  # 0 when the model does not use features
    n_classes: int
    version: int

    def accepts(self, item: ItemInput) -> bool:
        """Whether the model can score ``item`` (it has the features the model needs)."""
        return not self.n_features or (item.features is not None
                                       and len(item.features) == self.n_features)

    def committee(self, items: list[ItemInput]) -> tuple[np.ndarray, np.ndarray]:
        """The main model's probabilities (1, n, k) and the bootstrap committee's
        (members, n, k) for ``items``."""
        X = model_inputs(items, self.models, self.n_features, self.n_classes)
        return self.ranker.predict_proba(X)[None], self.ranker.committee_proba(X)


def _library_version() -> tuple[int, int]:
    return tuple(int(part) for part in sklearn.__version__.split(".")[:2])


def store_model(r: redis.Redis, pid: str, model: LoadedModel, meta: dict, keep: int) -> int:
    """Store a new version and make it current unless a newer-trained one is already there.

    ``meta["trained_on"]`` is the project's counted-label total when training started: with
    several workers, a retrain that started later must not be replaced by an earlier one
    finishing after it.
    """
    version = r.hincrby(K.model_meta_key(pid), "next_version", 1)
    model.version = version
    blob = base64.b64encode(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)).decode()
    record = {**meta, "version": version, "format": FORMAT,
              "sklearn": ".".join(map(str, _library_version())), "trained_at": time.time()}
    r.set(K.model_key(pid, version), blob)
    with r.pipeline() as pipe:
        pipe.watch(K.model_meta_key(pid))
        current = pipe.hget(K.model_meta_key(pid), "trained_on")
        if current is not None and int(current) > int(meta["trained_on"]):
            pipe.reset()
            r.delete(K.model_key(pid, version))
            return 0
        pipe.multi()
        pipe.hset(K.model_meta_key(pid), mapping={
            key: json.dumps(value) if isinstance(value, dict) else value
            for key, value in record.items()})
        pipe.lpush(K.model_history_key(pid), json.dumps(record))
        # The claim explores only once a model exists; it reads this beside the counts.
        pipe.hset(K.counters_key(pid), "mv", version)
        pipe.execute()
    _prune(r, pid, keep)
    return version


def set_metrics(r: redis.Redis, pid: str, version: int, metrics: dict) -> None:
    """Record the evaluation of ``version`` in its history entry, and in the current
    metadata while it is the current version."""
    with r.pipeline() as pipe:
        pipe.watch(K.model_meta_key(pid), K.model_history_key(pid))
        history = pipe.lrange(K.model_history_key(pid), 0, 50)
        current = pipe.hget(K.model_meta_key(pid), "version")
        pipe.multi()
        for index, entry in enumerate(history):  # loop over the newest entries
            record = json.loads(entry)
            if record["version"] == version:
                pipe.lset(K.model_history_key(pid), index,
                          json.dumps({**record, "metrics": metrics}))
        if current == str(version):
            pipe.hset(K.model_meta_key(pid), "metrics", json.dumps(metrics))
        # A newer version landing meanwhile aborts this: its own evaluation follows.
        with contextlib.suppress(redis.WatchError):
            pipe.execute()


HISTORY_KEPT = 500  # metadata records (for learning curves) outlive the stored models


def _prune(r: redis.Redis, pid: str, keep: int) -> None:
    """Delete the stored models older than the newest ``keep``; keep their metadata."""
    stale = r.lrange(K.model_history_key(pid), keep, keep + 50)
    if stale:
        r.delete(*[K.model_key(pid, json.loads(entry)["version"]) for entry in stale])
    r.ltrim(K.model_history_key(pid), 0, HISTORY_KEPT - 1)


def model_info(r: redis.Redis, pid: str) -> dict:
    """``{"version", "n_labels", "trained_at", "metrics", "metrics_basis", "exploration",
    ...}``; version None before training.  ``metrics`` is cross-validation on the labeled
    items (biased by selection), ``exploration`` the unbiased estimate (queue/quality.py).
    ``rescore_job_id`` is the re-score run that applies the version; ``reranked`` says
    whether its top is done (queue/rescore.py: the queue is re-ranked)."""
    meta = r.hgetall(K.model_meta_key(pid))
    quality = {"metrics_basis": CV_BASIS, "exploration": exploration_estimate(r, pid)}
    if "version" not in meta:
        return {"version": None, "n_labels": 0, "trained_at": None, "metrics": {}, **quality}
    history = [json.loads(entry) for entry in r.lrange(K.model_history_key(pid), 0, -1)]
    return {"version": int(meta["version"]), "n_labels": int(meta["n_labels"]),
            "trained_at": rfc3339(meta["trained_at"]), "metrics": json.loads(meta["metrics"]),
            **quality,
            "model": meta.get("model"), "strategy_version": int(meta.get("strategy_version", 0)),
            "rescore_job_id": meta.get("rescore_job_id"),
            "reranked": bool(meta.get("rescore_job_id")) and r.hexists(
                K.rescore_progress_key(pid, meta["rescore_job_id"]), "reranked_at"),
            "versions_kept": _stored_versions(r, pid, history)}


def _stored_versions(r: redis.Redis, pid: str, history: list[dict]) -> list[int]:
    """The versions whose model is still stored (older ones keep only their metadata)."""
    pipe = r.pipeline()
    for entry in history:
        pipe.exists(K.model_key(pid, entry["version"]))
    return [entry["version"] for entry, kept in zip(history, pipe.execute(), strict=True)
            if kept]


def load_model(r: redis.Redis, pid: str, version: int, meta: dict) -> LoadedModel:
    """Unpickle a stored version after checking this process understands it."""
    stored_format = int(meta.get("format", FORMAT))
    stored_lib = tuple(int(part) for part in meta.get("sklearn", "0.0").split("."))
    if stored_format > FORMAT or stored_lib > _library_version():
        raise ModelIncompatibleError(
            f"model version {version} of project '{pid}' was written with model format "
            f"{stored_format} and scikit-learn {meta.get('sklearn')}; this process has format "
            f"{FORMAT} and scikit-learn {sklearn.__version__}: upgrade this worker")
    blob = r.get(K.model_key(pid, version))
    if blob is None:
        raise ModelIncompatibleError(f"model version {version} of project '{pid}' is missing")
    return pickle.loads(base64.b64decode(blob))


# Models by project, each with the (version, trained_at) it was loaded for: a project deleted
# and created again under the same id restarts at version 1, so the version alone does not
# name a model.  The version is read on every use, so a new one is used at once
# (queue/cache.py).
model_cache = TtlCache()


def current_ranker(r: redis.Redis, project: dict) -> LoadedModel | None:
    """The project's current model, cached per process and reloaded when the version moves."""
    pid = project["id"]
    meta = r.hgetall(K.model_meta_key(pid))
    if "version" not in meta:
        return None
    version = int(meta["version"])
    return model_cache.get(pid, lambda: load_model(r, pid, version, meta),
                           version=(version, meta.get("trained_at")))
