"""The web process's request recorder: observations buffered in memory, flushed to Redis
in batches by a background thread, kept across a Redis outage and written exactly once."""

from __future__ import annotations

import redis

from taskrank.queue import keys as K
from taskrank.queue import metrics
from taskrank.server.recorder import RequestRecorder
from tests.server.test_metrics import parse, value
from tests.waits import wait_for


class _Untouchable:
    """A Redis client that fails the test on any use."""

    def __getattr__(self, name: str):  # noqa: ANN204 - any attribute
        raise AssertionError(f"observe() used Redis ({name})")


def test_requests_never_wait_on_redis_and_survive_an_outage(settings, r):
    """observe() makes no Redis call (it works against a dead server); a failed flush keeps
    the batch, and the next flush writes it exactly once."""
    recorder = RequestRecorder(_Untouchable(), flush_every=10_000)
    for _ in range(500):
        recorder.observe("GET", "/healthz", 200, 0.002)
    recorder.r = redis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    assert recorder.flush() is False
    assert not r.exists(K.metrics_http_key())
    recorder.r = r
    assert recorder.flush() is True
    assert recorder.flush() is True  # nothing left: no double count
    families = parse(metrics.render(r))
    assert value(families, "taskrank_http_requests_total", route="/healthz") == 500
    assert value(families, "taskrank_http_request_duration_seconds_bucket", route="/healthz",
                 le="0.0025") == 500
    assert value(families, "taskrank_http_request_duration_seconds_bucket", route="/healthz",
                 le="0.001") == 0


def test_a_full_batch_reaches_redis_without_a_scrape(settings, r):
    """100 buffered requests are flushed by the process's background thread on its own."""
    recorder = RequestRecorder(r, flush_every=100)
    # A route no app serves: an earlier test's app may still flush its own label counts.
    for _ in range(100):
        recorder.observe("POST", "/test/recorder", 201, 0.004)
    series = "POST\t/test/recorder\t201\tn"
    wait_for(lambda: r.hexists(K.metrics_http_key(), series), 5, "the flusher thread's write")
    assert r.hget(K.metrics_http_key(), series) == "100"
