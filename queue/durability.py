"""Does the Redis server keep acknowledged labels across a crash? (DESIGN §6)"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)


def durability_problems(r: redis.Redis) -> list[str]:
    """What in the server's persistence settings could lose acknowledged writes."""
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


def check_durability(r: redis.Redis, required: bool) -> bool:
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
