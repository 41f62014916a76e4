"""``st run --checks all``, as a test: schemathesis' own engine runs every phase (examples,
coverage, fuzzing, stateful) with every check against the seeded app, served over HTTP
as the command line reaches a server, and finds no failure of any kind.

The run is bounded by examples (half of ``--fuzz-examples`` per operation and phase, at
least 5), not by time.
The only help it gets is what its configuration would give: the seeded ids as parameter
values, an admin token, 413 counted as a refusal, and generated requests that follow the
rules the document states in words (``conftest.follow_stated_rules``).
"""

from __future__ import annotations

import random

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.engine import Status, events

from tests.fuzz.conftest import CONFIG, Seed, follow_stated_rules
from tests.live import serving

RUN_SEED = 15  # schemathesis' --seed: the same cases on every run


@pytest.fixture
def live_url(fuzz_app, seed: Seed):
    """The seeded app on a loopback port (threaded werkzeug server, stopped after)."""
    with serving(fuzz_app) as url:
        yield url


@pytest.fixture
def stated_rules(seed: Seed):
    """A before_call hook applying follow_stated_rules, registered for one test only."""
    rng = random.Random(RUN_SEED)

    def before_call(context, case, **kwargs):
        follow_stated_rules(case, seed, rng)

    schemathesis.hook(before_call)
    yield
    schemathesis.hooks.unregister(before_call)


def run_config(seed: Seed, examples: int) -> schemathesis.Config:
    """CONFIG plus what `st run` takes as options: token, ids, examples, seed (and no
    example database: every run the same)."""
    ids = seed.ids
    return schemathesis.Config.from_dict({
        **CONFIG,
        "headers": seed.auth("admin"),
        "parameters": {"path.pid": ids["pid"][0], "path.iid": ids["iid"][0],
                       "path.eid": ids["eid"][0], "path.tid": ids["tid"][0],
                       "path.jid": ids["jid"][0]},
        "generation": {**CONFIG["generation"], "max-examples": examples, "database": "none"},
        "seed": RUN_SEED,
    })


def problems(stream) -> tuple[list[str], int]:
    """Each failed check (phase, operation, check, title, curl) and each error the engine
    met; and the number of cases it ran."""
    found, cases = [], 0
    for event in stream:
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for case_checks in event.recorder.checks.values():
                for check in case_checks:
                    if check.status in (Status.FAILURE, Status.ERROR):
                        info = check.failure_info
                        what = f"{info.failure.title}\n    {info.code_sample}" if info else ""
                        found.append(f"{event.phase.name} {event.label} {check.name}: {what}")
        elif isinstance(event, events.NonFatalError):
            found.append(f"engine error on {event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            found.append(f"engine stopped: {event.exception!r}")
    return found, cases


def test_every_phase_and_check_finds_no_failure(live_url, seed, stated_rules, fuzz_examples):
    """Every phase of `st run` with every check: no 5xx, every answer as documented, every
    valid request accepted and every invalid one refused."""
    # Half the per-operation fuzz's examples: test_api_fuzz fuzzes each operation too.
    config = run_config(seed, max(5, fuzz_examples // 2))
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json", config=config)
    found, cases = problems(engine.from_schema(schema).execute())
    assert not found, f"{len(found)} problems:\n" + "\n".join(sorted(set(found)))[:20000]
    assert cases > 20 * len(schema.raw_schema["paths"])  # the phases ran
