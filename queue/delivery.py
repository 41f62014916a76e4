"""Webhook deliveries: the outbox drained into one RQ job per (event, webhook), each POSTed
signed as Standard Webhooks does and retried with backoff.

- ``drain`` (the ``drain_outbox`` job, and every worker's upkeep loop for what is left)
  takes outbox entries in order and creates, for each webhook subscribed to the entry's
  event, a delivery record (``keys.webhook_delivery_key``) and its job, then deletes the
  entries.  A delivery's id is derived from the entry and the webhook, so a drain that dies
  half-way and is redone makes the same deliveries, under the same ids, again.
- ``deliver`` (the job) POSTs the body with the headers ``webhook-id`` (the delivery's
  id, the same on every attempt), ``webhook-timestamp`` (of the attempt) and
  ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``).  A
  2xx delivers it.  No answer, 408, 429 or 5xx: it is retried after the next of
  ``TASKRANK_WEBHOOK_RETRY_INTERVALS`` (or the receiver's longer ``Retry-After``, up to an
  hour) by returning RQ's ``Retry``; once they are used up it has failed.  Any other answer
  (3xx, other 4xx) fails it at once: asking again would get the same.
- A webhook's deliveries page lists its newest ``TASKRANK_WEBHOOK_DELIVERIES_KEPT``; a
  delivery that drops off it is deleted once it is delivered or failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from rq import Retry

from taskrank.queue import keys as K
from taskrank.queue.clock import rfc3339
from taskrank.queue.connection import rq_redis
from taskrank.queue.enqueue import JOB_TIMEOUT, RETRY, job_redis
from taskrank.queue.settings import Settings, current
from taskrank.queue.webhooks import load_webhook, load_webhooks, signing_key
from taskrank.queue.worker import task_queue

DRAIN_BATCH = 100  # outbox entries per step; the drain lock is held for one step
LOCK_SECONDS = 60
RECORD_SECONDS = 30 * 86400  # a record no delivery finishes (lost job) still goes away
MAX_RETRY_AFTER = 3600  # the most a receiver's Retry-After delays the next attempt
ANSWER_CHARS = 200  # of a failing receiver's answer, kept as the delivery's error
RETRYABLE = {408, 429}  # and every 5xx and no answer at all
USER_AGENT = "taskrank-webhooks/1"


def enqueue_drain(r: redis.Redis, pid: str, job_id: str) -> None:
    """Queue the drain of the project's outbox as ``job_id`` (named by EMIT_EVENT)."""
    with rq_redis(r) as binary:
        task_queue(current(), binary).enqueue(drain_outbox, pid, job_id=job_id, retry=RETRY,
                                              job_timeout=JOB_TIMEOUT,
                                              description=f"webhooks {pid}")


def drain_outbox(pid: str) -> dict:
    """The job: turn the project's outbox into delivery jobs."""
    with job_redis() as r:
        # Cleared first: an event recorded from now on queues the next drain.
        r.delete(K.webhook_drain_pending_key(pid))
        return {"deliveries": drain(r, pid)}


def drain(r: redis.Redis, pid: str) -> int:
    """Move every outbox entry into deliveries (unless another process is doing it); the
    number of deliveries queued."""
    outbox, lock, queued = K.webhook_outbox_key(pid), K.webhook_drain_lock_key(pid), 0
    while r.set(lock, secrets.token_hex(8), nx=True, ex=LOCK_SECONDS):
        try:
            entries = r.xrange(outbox, count=DRAIN_BATCH)
            if entries:
                queued += _fan_out(r, pid, entries)
                r.xdel(outbox, *[entry_id for entry_id, _ in entries])
        finally:
            r.delete(lock)
        # Checked after the lock is let go: a drain that found it held has left, and what
        # it was queued for may have arrived after the batch above.
        if not r.xlen(outbox):
            break
    return queued


def drain_all(r: redis.Redis) -> int:
    """Drain every project's left-over outbox (the workers' upkeep)."""
    return sum(drain(r, pid) for pid in r.smembers(K.projects_key())
               if r.xlen(K.webhook_outbox_key(pid)))


def delivery_id(pid: str, entry_id: str, name: str) -> str:
    """``msg_<hex>``: the same for the same outbox entry and webhook (an RQ job id too)."""
    digest = hashlib.sha256(f"{pid}\n{entry_id}\n{name}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _fan_out(r: redis.Redis, pid: str, entries: list) -> int:
    hooks, settings, jobs = load_webhooks(r, pid), current(), []
    for entry_id, fields in entries:
        for name, hook in sorted(hooks.items()):
            if fields["type"] in hook["events"]:
                did = delivery_id(pid, entry_id, name)
                if _record(r, settings, pid, name, did, fields):
                    jobs.append(did)
    if jobs:
        with rq_redis(r, settings) as binary:
            queue = task_queue(settings, binary)
            queue.enqueue_many([queue.prepare_data(
                deliver, (pid, did), job_id=did, retry=RETRY, timeout=JOB_TIMEOUT,
                description=f"webhook {did}") for did in jobs])
    return len(jobs)


def _record(r: redis.Redis, settings: Settings, pid: str, name: str, did: str,
            fields: dict) -> bool:
    """Create the delivery's record and put it on its webhook's page; whether its job is
    to be queued (also when a drain died between the record and the job)."""
    key = K.webhook_delivery_key(pid, did)
    if not r.hsetnx(key, "id", did):
        status, attempts = r.hmget(key, "status", "attempts")
        return status == "pending" and attempts == "0"
    page, kept = K.webhook_deliveries_key(pid, name), settings.webhook_deliveries_kept
    pipe = r.pipeline()
    pipe.hset(key, mapping={"webhook": name, "event": fields["type"], "body": fields["body"],
                            "status": "pending", "attempts": 0, "created_at": time.time()})
    pipe.expire(key, RECORD_SECONDS)
    pipe.lpush(page, did)
    pipe.lrange(page, kept, -1)
    pipe.ltrim(page, 0, kept - 1)
    dropped = pipe.execute()[3]
    for old in dropped:  # off the page: gone once finished (a pending one still goes out)
        old_key = K.webhook_delivery_key(pid, old)
        if r.hget(old_key, "status") in ("delivered", "failed"):
            r.unlink(old_key)
    return True


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the receiver's status (None: no answer) and what went wrong."""

    status: int | None
    error: str | None = None
    retry_after: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in RETRYABLE


def deliver(pid: str, did: str) -> dict | Retry:
    """The job: one attempt of a delivery; RQ's ``Retry`` when it is to be tried again."""
    with job_redis() as r:
        return _attempt(r, current(), pid, did)


def _attempt(r: redis.Redis, settings: Settings, pid: str, did: str) -> dict | Retry:
    key = K.webhook_delivery_key(pid, did)
    record = r.hgetall(key)
    if record.get("status") != "pending":  # a copy of the job ran it to the end
        return {"skipped": f"delivery {did} is {record.get('status') or 'gone'}"}
    hook = load_webhook(r, pid, record["webhook"])
    if hook is None:
        _finish(r, pid, record, "failed", error="the webhook was deleted")
        return {"status": "failed"}
    attempt = r.hincrby(key, "attempts", 1)
    answer = post(hook["url"], signing_key(hook["secret"]), did, record["body"].encode(),
                  settings.webhook_timeout)
    intervals = settings.retry_intervals
    if answer.delivered:
        _finish(r, pid, record, "delivered", answer)
    elif answer.retryable and attempt <= len(intervals):
        wait = max(intervals[attempt - 1], min(answer.retry_after, MAX_RETRY_AFTER))
        r.hset(key, mapping={**_last(answer), "next_attempt_at": time.time() + wait})
        return Retry(max=len(intervals), interval=[wait])
    else:
        _finish(r, pid, record, "failed", answer)
    return {"status": r.hget(key, "status"), "attempts": attempt, "code": answer.status}


def _last(answer: Answer) -> dict:
    return {"code": "" if answer.status is None else answer.status,
            "error": answer.error or "", "last_attempt_at": time.time()}


def _finish(r: redis.Redis, pid: str, record: dict, status: str, answer: Answer | None = None,
            error: str | None = None) -> None:
    key = K.webhook_delivery_key(pid, record["id"])
    fields = {"status": status, "next_attempt_at": "",
              **(_last(answer) if answer else {"error": error})}
    if status == "delivered":
        fields["delivered_at"] = time.time()
    r.hset(key, mapping=fields)
    if r.lpos(K.webhook_deliveries_key(pid, record["webhook"]), record["id"]) is None:
        r.unlink(key)  # already off its page: nobody can see it any more


def signature(key: bytes, did: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` (Standard Webhooks)."""
    digest = hmac.new(key, f"{did}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def post(url: str, key: bytes, did: str, body: bytes, timeout: float) -> Answer:
    """One signed POST of ``body``; redirects are not followed (a 3xx is an answer)."""
    parts = urlsplit(url)
    connection_type = (http.client.HTTPSConnection if parts.scheme == "https"
                       else http.client.HTTPConnection)
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "webhook-id": did, "webhook-timestamp": str(timestamp),
               "webhook-signature": signature(key, did, timestamp, body)}
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_type(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", target, body=body, headers=headers)
        with connection.getresponse() as response:  # closed even if its body is not read
            text = response.read(4 * ANSWER_CHARS).decode(errors="replace")
    except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, TLS
        return Answer(None, f"{type(error).__name__}: {error}"[:ANSWER_CHARS])
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return Answer(response.status)
    return Answer(response.status, f"HTTP {response.status}: {text}"[:ANSWER_CHARS],
                  _seconds(response.getheader("Retry-After")))


def _seconds(value: str | None) -> float:
    """A ``Retry-After`` given in seconds (an HTTP date is ignored: the schedule holds)."""
    try:
        return max(float(value), 0.0) if value else 0.0
    except ValueError:
        return 0.0


def delivery_page(r: redis.Redis, pid: str, name: str, limit: int) -> list[dict]:
    """The webhook's newest ``limit`` deliveries, newest first."""
    ids = r.lrange(K.webhook_deliveries_key(pid, name), 0, limit - 1)
    pipe = r.pipeline(transaction=False)
    for did in ids:
        pipe.hgetall(K.webhook_delivery_key(pid, did))
    return [_view(record) for record in pipe.execute() if record.get("status")]


def _view(record: dict) -> dict:
    code = record.get("code")
    return {"id": record["id"], "event": record["event"], "status": record["status"],
            "attempts": int(record.get("attempts") or 0),
            "last_status_code": int(code) if code else None,
            "last_error": record.get("error") or None,
            "created_at": rfc3339(record.get("created_at")),
            "last_attempt_at": rfc3339(record.get("last_attempt_at")),
            "next_attempt_at": rfc3339(record.get("next_attempt_at")),
            "delivered_at": rfc3339(record.get("delivered_at")),
            "payload": json.loads(record["body"])}
