"""Webhook subscriptions of a project: which URL gets which events, signed with which secret.

A subscription is stored whole, secret included (the deliveries are signed with it), in the
project's webhooks hash (``keys.webhooks_key``); it is shown only with a hint of its secret.
What is sent, and how, is in ``queue/events.py`` (recording events) and
``queue/delivery.py`` (delivering them).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from urllib.parse import urlsplit

import redis

from taskrank.queue import keys as K
from taskrank.queue.cache import TtlCache
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import NoSuchWebhookError
from taskrank.queue.projects import get_project
from taskrank.queue.validation import check_keys, check_object, fail

EVENTS = ("item.finished", "model.trained", "queue.reranked", "expert.flagged",
          "budget.exhausted")
FIELDS = {"url", "events", "secret"}
MAX_WEBHOOKS = 20  # per project: each event is delivered once per subscriber
MAX_URL = 2048
SECRET_PREFIX = "whsec_"  # Standard Webhooks: base64 of the key's bytes follows
SECRET_BYTES = (24, 64)  # the key's length, as the Standard Webhooks spec asks
PLAIN_SECRET = (24, 128)  # characters of a secret given without the prefix
SECRET_RULE = (f"must be '{SECRET_PREFIX}' followed by the base64 of {SECRET_BYTES[0]} to "
               f"{SECRET_BYTES[1]} random bytes (Standard Webhooks), or a plain string of "
               f"{PLAIN_SECRET[0]} to {PLAIN_SECRET[1]} characters used as the key's bytes")

# Whether a project has subscribers for an event is asked after every counted label; the one
# cache policy (queue/cache.py) bounds how late another process sees a new subscription.
subscriptions_cache = TtlCache()


def parse_webhook(body: object) -> dict:
    """A subscription's fields, checked; each failure names the field and the fix."""
    body = check_object(body, "body")
    check_keys(body, "", FIELDS, FIELDS)
    return {"url": check_url(body["url"]), "events": _check_events(body["events"]),
            "secret": _check_secret(body["secret"])}


def check_url(value: object) -> str:
    problem = "must be an absolute http:// or https:// URL with a host"
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_URL:
        raise fail("url", f"{problem}, of at most {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise fail("url", f"{problem}; got {value!r}"[:300]) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            char.isspace() for char in value):
        raise fail("url", f"{problem}; got {value!r}"[:300])
    return value


def _check_events(value: object) -> list[str]:
    expected = f"a non-empty list of distinct events from {list(EVENTS)}"
    if not isinstance(value, list) or not value:
        raise fail("events", f"must be {expected}")
    for index, event in enumerate(value):
        if event not in EVENTS:
            raise fail(f"events[{index}]", f"unknown event {event!r}; expected one of "
                                            f"{list(EVENTS)}"[:300])
    if len(set(value)) != len(value):
        raise fail("events", f"must be {expected}; an event is listed twice")
    return value


def _check_secret(value: object) -> str:
    if not isinstance(value, str):
        raise fail("secret", SECRET_RULE)
    if value.startswith(SECRET_PREFIX):
        try:
            key = _decode(value[len(SECRET_PREFIX):])
        except (binascii.Error, ValueError):
            raise fail("secret", f"is not valid base64 after '{SECRET_PREFIX}'; "
                                 f"{SECRET_RULE}") from None
        if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
            raise fail("secret", f"decodes to {len(key)} bytes; {SECRET_RULE}")
    elif not PLAIN_SECRET[0] <= len(value) <= PLAIN_SECRET[1]:
        raise fail("secret", f"has {len(value)} characters; {SECRET_RULE}")
    return value


def _decode(text: str) -> bytes:
    """Standard base64, padding optional (as Standard Webhooks libraries read it)."""
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def signing_key(secret: str) -> bytes:
    """The HMAC key of a stored secret: the decoded bytes of a ``whsec_`` secret, else the
    UTF-8 bytes of the plain string."""
    if secret.startswith(SECRET_PREFIX):
        return _decode(secret[len(SECRET_PREFIX):])
    return secret.encode()


def put_webhook(r: redis.Redis, pid: str, name: str, body: object) -> tuple[dict, bool]:
    """Create or replace subscription ``name``; (its view, whether it was created)."""
    get_project(r, pid)
    hook = parse_webhook(body)
    old = r.hget(K.webhooks_key(pid), name)
    if old is None and r.hlen(K.webhooks_key(pid)) >= MAX_WEBHOOKS:
        raise fail("name", f"the project has {MAX_WEBHOOKS} webhooks, the most it may have; "
                           "delete one or subscribe an existing one to more events")
    now = time.time()
    hook["created_at"] = json.loads(old)["created_at"] if old else now
    hook["updated_at"] = now
    r.hset(K.webhooks_key(pid), name, json.dumps(hook))
    subscriptions_cache.forget(pid)
    return webhook_view(name, hook), old is None


def load_webhooks(r: redis.Redis, pid: str) -> dict[str, dict]:
    """{name: subscription} with secrets (for signing; never for an answer)."""
    return {name: json.loads(raw) for name, raw in r.hgetall(K.webhooks_key(pid)).items()}


def load_webhook(r: redis.Redis, pid: str, name: str) -> dict | None:
    raw = r.hget(K.webhooks_key(pid), name)
    return None if raw is None else json.loads(raw)


def get_webhook(r: redis.Redis, pid: str, name: str) -> dict:
    get_project(r, pid)
    hook = load_webhook(r, pid, name)
    if hook is None:
        raise NoSuchWebhookError(f"project {pid} has no webhook '{name}'; list them with "
                                 f"GET /v1/projects/{pid}/webhooks")
    return webhook_view(name, hook)


def list_webhooks(r: redis.Redis, pid: str) -> list[dict]:
    get_project(r, pid)
    return [webhook_view(name, hook) for name, hook in sorted(load_webhooks(r, pid).items())]


def delete_webhook(r: redis.Redis, pid: str, name: str) -> None:
    """Remove the subscription and its deliveries page; deliveries still retrying stop."""
    get_webhook(r, pid, name)
    page = K.webhook_deliveries_key(pid, name)
    records = [K.webhook_delivery_key(pid, did) for did in r.lrange(page, 0, -1)]
    r.hdel(K.webhooks_key(pid), name)
    r.unlink(page, *records)
    subscriptions_cache.forget(pid)


def webhook_view(name: str, hook: dict) -> dict:
    """A subscription as the API shows it: the secret only as a hint."""
    secret = hook["secret"]
    prefix = SECRET_PREFIX if secret.startswith(SECRET_PREFIX) else ""
    return {"name": name, "url": hook["url"], "events": hook["events"],
            "secret_hint": f"{prefix}...{secret[-4:]}",
            "created_at": rfc3339(hook["created_at"]), "updated_at": rfc3339(hook["updated_at"])}


def subscribed(r: redis.Redis, pid: str, event: str) -> bool:
    """Whether some webhook of the project takes ``event`` (cached; see above)."""
    events = subscriptions_cache.get(pid, lambda: frozenset(
        event for hook in load_webhooks(r, pid).values() for event in hook["events"]))
    return event in events
