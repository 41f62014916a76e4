"""Does the Redis server keep acknowledged labels across a crash? (DESIGN §6)  On a Redis
Cluster every master is checked: each holds the labels of its projects."""

from __future__ import annotations

import logging

import redis

from taskrank.queue.connection import DataClient, masters

log = logging.getLogger(__name__)


def durability_problems(r: DataClient) -> list[str]:
    """What in the persistence settings of the data store's servers could lose acknowledged
    writes (on a cluster, each problem names its master)."""
    servers = masters(r)
    if len(servers) == 1:
        return _problems(servers[0])
    return [f"master {_address(server)}: {problem}" for server in servers
            for problem in _problems(server)]


def _address(server: redis.Redis) -> str:
    kwargs = server.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _problems(r: redis.Redis) -> list[str]:
    config = r.config_get("appendonly")
    config.update(r.config_get("appendfsync"))
    config.update(r.config_get("maxmemory-policy"))
    problems = []
    if config.get("appendonly") != "yes":
        problems.append("appendonly is not 'yes' (no append-only file)")
    elif config.get("appendfsync") == "no":
        problems.append("appendfsync is 'no' (writes reach disk when the OS decides)")
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        problems.append(f"maxmemory-policy is '{config['maxmemory-policy']}', not 'noeviction' "
                        "(Redis may evict data when full)")
    return problems


def check_durability(r: DataClient, required: bool) -> bool:
    """Warn (or, when ``required``, refuse with False) on a Redis that can lose labels."""
    try:
        problems = durability_problems(r)
    except redis.ResponseError as error:  # managed Redis services may forbid CONFIG
        log.warning("cannot read the Redis persistence settings (%s); durability unchecked",
                    error)
        return not required
    for problem in problems:
        log.warning("Redis durability: %s: acknowledged labels could be lost", problem)
    if problems and required:
        log.error("TASKRANK_REQUIRE_DURABLE_REDIS=1: refusing to start on this Redis")
        return False
    return True
