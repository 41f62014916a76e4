"""queue/lua.py's rules for Redis Cluster: a script of a project gets only keys of that
project's slot, keys are built by one helper, a global script runs on one key."""

from __future__ import annotations

import re

import pytest

from taskrank.queue import keys as K
from taskrank.queue import lua
from tests.cluster import both_backends

pytestmark = both_backends


@pytest.mark.parametrize("stray", ["taskrank:{q}:leases", "taskrank:projects", "leases"])
def test_a_key_outside_the_projects_slot_is_refused(r, stray):
    """A key of another project, a global key or a foreign key among a project script's
    KEYS is a ValueError naming it, before anything runs (on a single Redis too)."""
    with pytest.raises(ValueError, match=re.escape(stray)):
        lua.run(r, "extend", "p", [stray], [0, "t.p", 60])
    assert lua.run(r, "extend", "p", [K.task_key("p", "t.p")], [0, "t.p", 60]) == ["", ""]


def test_a_global_script_runs_on_exactly_one_key(r):
    """run_global refuses two keys (they may lie in two slots) and runs with one."""
    day = K.expert_day_key("e1", "2025-01-31")
    with pytest.raises(ValueError, match="one global key"):
        lua.run_global(r, "add_expert_seconds", [day, K.expert_key("e1")], ["t", 5, 60])
    assert float(lua.run_global(r, "add_expert_seconds", [day], ["t", 5, 60])) == 5.0


def test_scripts_build_every_key_with_the_one_helper():
    """No script concatenates a key prefix itself: every key it finds out as it runs goes
    through built_key (whose comment says why it cannot be declared)."""
    for name, script in lua.SCRIPTS.items():
        own = script.replace("return prefix .. id .. (suffix or '')", "")
        assert not re.search(r"P_(ITEM|TASK|XLEASE|TAG|SKILL) \.\. (?!turn)", own), name
