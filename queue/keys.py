"""Every Redis key taskrank uses, built here and nowhere else.

Keys of one project carry the hash tag ``{pid}`` so a project lives in one Redis Cluster
slot and its Lua scripts may touch all of its keys atomically.  Experts, tokens and the
other global keys each hash to a slot of their own: no command or script spans two.  Item,
task and expert ids match ``[A-Za-z0-9._-]{1,128}``, so they cannot contain the ``:``
separator.
"""

from __future__ import annotations

PREFIX = "taskrank:"


def _project(pid: str) -> str:
    return f"{PREFIX}{{{pid}}}:"


def project_prefix(pid: str) -> str:
    """What every key of project ``pid`` starts with: its hash tag ``{pid}`` decides the
    Redis Cluster slot of them all (``lua.run`` checks a script's keys against it)."""
    return _project(pid)


# --- global -------------------------------------------------------------------------------
def projects_key() -> str:
    """Set of project ids."""
    return f"{PREFIX}projects"


def token_key(token_hash: str) -> str:
    """Hash describing one API token (role, expert_id); keyed by the token's SHA-256."""
    return f"{PREFIX}token:{token_hash}"


def admin_tokens_key() -> str:
    """Set of the hashes of admin tokens, to know whether a first admin token exists."""
    return f"{PREFIX}admin-tokens"


def expert_key(eid: str) -> str:
    """Hash of an expert: declared skills, capacity, cost, active, learned accuracy counts."""
    return f"{PREFIX}expert:{eid}"


def experts_key() -> str:
    """Set of expert ids."""
    return f"{PREFIX}experts"


def expert_day_key(eid: str, day: str) -> str:
    """Hash of an expert's counted labeling time on one UTC day (``YYYY-MM-DD``), across
    projects: seconds per task id (so a replayed label adds nothing) and their sum
    ``_total`` (for ``max_hours_per_day``)."""
    return f"{PREFIX}expert-day:{eid}:{day}"


def metrics_http_key() -> str:
    """Hash of the HTTP request metrics of every web process (counts, latency buckets)."""
    return f"{PREFIX}metrics:http"


def web_secret_key() -> str:
    """Random secret signing the operator page's login cookies, shared by all web processes."""
    return f"{PREFIX}web-secret"


# --- per project ----------------------------------------------------------------------------
def project_key(pid: str) -> str:
    """Hash of a project's settings (labels, redundancy, lease_seconds, strategy...)."""
    return _project(pid) + "project"


def strategy_history_key(pid: str) -> str:
    """List of the project's previous strategies (JSON), newest first."""
    return _project(pid) + "strategies"


def replication_fence_key(pid: str) -> str:
    """Counter incremented after an acknowledged write of the project, in the same slot, so
    that a WAIT after it covers that write whoever sent it (``queue/replication.py``)."""
    return _project(pid) + "replication-fence"


def item_prefix(pid: str) -> str:
    """Prefix of the item hashes, passed to Lua which appends item ids."""
    return _project(pid) + "item:"


def item_key(pid: str, iid: str) -> str:
    """Hash of one item: data, status, priority, breakdown, label counts."""
    return item_prefix(pid) + iid


def item_experts_key(pid: str, iid: str) -> str:
    """Set of experts who leased or labeled the item (never served to them again)."""
    return item_key(pid, iid) + ":experts"


def item_labels_key(pid: str, iid: str) -> str:
    """List of the item's counted labels as ``expert_id<TAB>label``."""
    return item_key(pid, iid) + ":labels"


def pool_tag_key(pid: str, tag: str) -> str:
    """Sorted set of rankable items that require skill ``tag``."""
    return _project(pid) + "pool-tag:" + tag


def pool_untagged_key(pid: str) -> str:
    """Sorted set of rankable items that require no skill."""
    return _project(pid) + "pool-untagged"


def pool_set_key(pid: str, tag: str) -> str:
    """The pool set of skill ``tag``, or the untagged one for ``""``."""
    return pool_tag_key(pid, tag) if tag else pool_untagged_key(pid)


def pool_keys(pid: str, tags: list[str]) -> list[str]:
    """The sorted sets an item with skill ``tags`` sits in while it is rankable."""
    return [pool_tag_key(pid, tag) for tag in tags] or [pool_untagged_key(pid)]


def tags_key(pid: str) -> str:
    """Set of every skill tag an item of the project required (to find every tag pool:
    there is no global pool, an item sits only in its tag sets or the untagged one)."""
    return _project(pid) + "tags"


def items_key(pid: str) -> str:
    """Set of every item id of the project (for counts and full re-scores)."""
    return _project(pid) + "items"


def labeled_key(pid: str) -> str:
    """Set of items that have an aggregated label (the training set)."""
    return _project(pid) + "labeled"


def task_prefix(pid: str) -> str:
    """Prefix of task (lease) hashes, passed to Lua."""
    return _project(pid) + "task:"


def task_key(pid: str, tid: str) -> str:
    """Hash of one task (lease): item, expert, expires_at, state."""
    return task_prefix(pid) + tid


def leases_key(pid: str) -> str:
    """Sorted set of open task ids by expiry time."""
    return _project(pid) + "leases"


def expert_leases_prefix(pid: str) -> str:
    """Prefix of per-expert open-lease sets, passed to Lua."""
    return _project(pid) + "expert-leases:"


def expert_leases_key(pid: str, eid: str) -> str:
    """Sorted set of an expert's open task ids in this project, by expiry time."""
    return expert_leases_prefix(pid) + eid


def labels_stream_key(pid: str) -> str:
    """Stream of every label submitted (counted or not): the durable, exportable log."""
    return _project(pid) + "labels"


def counters_key(pid: str) -> str:
    """Hash of project counters (labels counted, late, since last retrain; items by status
    as ``n:pending``, ``n:leased``, ``n:labeled``...; US dollars ``spent_usd`` on labels
    and ``reserved_usd`` by open leases)."""
    return _project(pid) + "counters"


def spend_key(pid: str) -> str:
    """Hash of the project's spend breakdowns, written by the LABEL script: ``usd:``,
    ``sec:`` and ``n:`` (dollars, seconds, labels) of every charged label, in total (no
    suffix) and by ``e:<expert>``, ``s:<skill tag or _general>`` and ``d:<YYYY-MM-DD>``.
    The totals of dollars spent and reserved live in the counters hash."""
    return _project(pid) + "spend"


def claim_idempotency_key(pid: str, eid: str, key: str) -> str:
    """The stored answer of a ``tasks/next`` sent with an ``Idempotency-Key``."""
    return _project(pid) + f"idem-next:{eid}:{key}"


def label_idempotency_key(pid: str, tid: str, key: str) -> str:
    """The stored answer of a label submitted with an ``Idempotency-Key``."""
    return _project(pid) + f"idem:{tid}:{key}"


def model_key(pid: str, version: int) -> str:
    """String holding one stored model version (pickled ranker + metadata)."""
    return _project(pid) + f"model:{version}"


def model_meta_key(pid: str) -> str:
    """Hash describing the current model version (version, n_labels, trained_at, metrics)."""
    return _project(pid) + "model-meta"


def retrain_durations_key(pid: str) -> str:
    """Hash of the project's retrain durations: count, sum and histogram buckets."""
    return _project(pid) + "retrain-durations"


def model_history_key(pid: str) -> str:
    """List of stored model versions (metadata JSON), newest first."""
    return _project(pid) + "model-history"


def rescore_snapshot_key(pid: str, run: str, chunk: int, segment: int) -> str:
    """Sorted set of the item ids of one segment (a score range of one pool set) of a chunk
    of a re-score run, captured when the run starts."""
    return _project(pid) + f"rescore:{run}:{chunk}:{segment}"


def rescore_progress_key(pid: str, run: str) -> str:
    """Hash of a re-score run's progress: chunks done, items updated."""
    return _project(pid) + f"rescore-progress:{run}"


def rescore_latest_key(pid: str) -> str:
    """Id of the project's newest re-score run: it supersedes the tail of older runs."""
    return _project(pid) + "rescore-latest"


def retrain_pending_key(pid: str) -> str:
    """Id of the retrain job waiting in the queue; later labels merge into it."""
    return _project(pid) + "retrain-pending"


def holdback_key(pid: str) -> str:
    """Sorted set: item id -> time until which it is held back for a better expert."""
    return _project(pid) + "holdback"


def holdback_owner_key(pid: str) -> str:
    """Hash: item id -> expert the item is held back for."""
    return _project(pid) + "holdback-owner"


def pool_map_key(pid: str) -> str:
    """The project's pool map (scaler, cluster centres, reference rows) as JSON; see
    ``learning.coverage``."""
    return _project(pid) + "pool-map"


def claimed_clusters_key(pid: str) -> str:
    """Hash: cluster id -> leases handed out in that cluster since the last re-rank."""
    return _project(pid) + "claimed-clusters"


def followup_key(pid: str) -> str:
    """Set of item ids whose counted label still waits for its follow-up (aggregation by
    queue/aggregate.py): written by the LABEL script with the label, removed once done, so
    a failure after the label was stored is retried by the workers' upkeep."""
    return _project(pid) + "followup"


def relabeled_key(pid: str) -> str:
    """Set of the items that joined the labeled set, or were aggregated again there, since
    the last re-aggregation took them (queue/reaggregate.py): written with the label (the
    LABEL and IMPORT_LABELS scripts when they vote an item's only label, queue/aggregate.py
    otherwise); a retrain's new labels."""
    return _project(pid) + "relabeled"


def relabeled_taken_key(pid: str) -> str:
    """Set of the ``relabeled_key`` items a re-aggregation took (moved here when it starts,
    deleted with its result), so labels arriving meanwhile wait for the next one and the
    items of a pass that died are taken again by the next."""
    return _project(pid) + "relabeled-taken"


def aggregation_state_key(pid: str) -> str:
    """String (JSON) of what the project's Dawid–Skene passes learned, kept as running sums
    (queue/reaggregate.py): per (expert, skill) the soft count of right labels, the labels
    and the accuracy its items were last decided at; per class the posterior mass; where
    the refresh of items whose accuracies moved stands.  Each item's share of the sums is in
    its hash (field ``ds``)."""
    return _project(pid) + "ds-state"


def aggregation_index_key(pid: str, eid: str, tag: str) -> str:
    """List of the items counted by Dawid–Skene that expert ``eid`` ('' for labels without
    an expert) labeled under skill ``tag``, each once, in the order first counted: the items
    decided again when that accuracy moves."""
    return _project(pid) + f"ds-index:{eid}:{tag}"


def aggregation_items_key(pid: str) -> str:
    """List of every item counted by Dawid–Skene, each once, in the order first counted:
    the items decided again when the class shares move."""
    return _project(pid) + "ds-items"


def aggregation_lock_key(pid: str) -> str:
    """Held while one process re-aggregates the project: the statistics are running sums,
    so two passes at once would count an item twice."""
    return _project(pid) + "ds-lock"


def full_reaggregation_key(pid: str) -> str:
    """Set when a full Dawid–Skene pass was asked for (``POST .../retrain?full=true``): the
    next re-aggregation deletes it and starts from scratch."""
    return _project(pid) + "ds-full"


def explore_labels_key(pid: str) -> str:
    """List of item ids labeled through an exploration lease, not yet evaluated."""
    return _project(pid) + "explore-labels"


def explore_results_key(pid: str) -> str:
    """List (newest first) of JSON records: how a model version predicted exploration
    labels it never trained on."""
    return _project(pid) + "explore-results"


def pool_map_pending_key(pid: str) -> str:
    """Id of the pool-map job waiting in the queue; later ingests merge into it."""
    return _project(pid) + "pool-map-pending"


def expert_skill_prefix(pid: str) -> str:
    """Prefix of the per-expert hashes of what the project learned (passed to Lua)."""
    return _project(pid) + "expert-skill:"


def expert_skill_key(pid: str, eid: str) -> str:
    """Hash of what the project learned of one expert, per skill (queue/skills.py)."""
    return expert_skill_prefix(pid) + eid


def gold_key(pid: str, tag: str) -> str:
    """Sorted set of the gold items requiring ``tag`` ('_general': untagged), under the
    tag-pool prefix after 'gold:' (a tag holds no ':'); the Lua scripts build it alike."""
    return pool_tag_key(pid, "gold:" + tag)


def working_experts_key(pid: str) -> str:
    """Sorted set: expert id -> time of its last claim in the project (the hold-back
    waits only for experts who are working)."""
    return _project(pid) + "working-experts"


# --- webhooks (queue/webhooks.py, queue/events.py, queue/delivery.py) -----------------------
def webhooks_key(pid: str) -> str:
    """Hash: webhook name -> its subscription as JSON (url, events, secret, times)."""
    return _project(pid) + "webhooks"


def webhook_outbox_key(pid: str) -> str:
    """Stream of the project's events not yet turned into deliveries (the outbox): fields
    ``type`` and ``body`` (the JSON every subscriber gets)."""
    return _project(pid) + "webhook-outbox"


def webhook_marks_key(pid: str) -> str:
    """Hash of the once-markers of project-wide events: ``model.trained`` (last version
    sent), ``budget.exhausted`` (the budget_usd it was sent for), ``flagged:<eid>:<tag>``."""
    return _project(pid) + "webhook-marks"


def webhook_drain_pending_key(pid: str) -> str:
    """Id of the outbox drain job waiting in the queue; later events merge into it."""
    return _project(pid) + "webhook-drain-pending"


def webhook_drain_lock_key(pid: str) -> str:
    """Held while one process turns outbox entries into deliveries."""
    return _project(pid) + "webhook-drain-lock"


def webhook_delivery_key(pid: str, did: str) -> str:
    """Hash of one delivery: webhook, event, body, status, attempts, last answer, times."""
    return _project(pid) + "webhook-delivery:" + did


def webhook_deliveries_key(pid: str, name: str) -> str:
    """List of a webhook's recent delivery ids, newest first (the deliveries page)."""
    return _project(pid) + "webhook-deliveries:" + name
