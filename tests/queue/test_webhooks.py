"""Webhook subscriptions in Redis: stored whole, shown without the secret, validated with a
message naming the field and the fix, and the signing key a secret stands for."""

from __future__ import annotations

import base64

import pytest

from taskrank.queue import keys as K
from taskrank.queue.exceptions import InvalidInputError, NoSuchProjectError, NoSuchWebhookError
from taskrank.queue.projects import create_project
from taskrank.queue.webhooks import (
    EVENTS,
    MAX_WEBHOOKS,
    delete_webhook,
    get_webhook,
    list_webhooks,
    load_webhook,
    put_webhook,
    signing_key,
    subscribed,
)
from tests.cluster import both_backends
from tests.receiver import SECRET

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

PLAIN = "a plain secret of 32 characters!"
URL = "https://platform.example/hooks?project=p"


@pytest.fixture
def project(r):
    return create_project(r, {"id": "p", "labels": ["a", "b"]})


def body(**changes):
    return {"url": URL, "events": ["item.finished"], "secret": SECRET, **changes}


def test_put_get_list_delete(r, project):
    """PUT creates then replaces (keeping created_at); GET and the list show the secret only
    as a hint; DELETE removes it and its deliveries page."""
    view, created = put_webhook(r, "p", "w1", body())
    assert created and view["secret_hint"] == "whsec_..." + SECRET[-4:]
    assert SECRET not in str(view) and view["events"] == ["item.finished"]
    again, created = put_webhook(r, "p", "w1", body(events=list(EVENTS), secret=PLAIN))
    assert not created and again["created_at"] == view["created_at"]
    assert again["secret_hint"] == "..." + PLAIN[-4:]
    assert get_webhook(r, "p", "w1") == again
    put_webhook(r, "p", "w0", body())
    assert [hook["name"] for hook in list_webhooks(r, "p")] == ["w0", "w1"]
    assert load_webhook(r, "p", "w1")["secret"] == PLAIN  # kept whole, for signing
    r.rpush(K.webhook_deliveries_key("p", "w1"), "msg_x")
    delete_webhook(r, "p", "w1")
    assert not r.exists(K.webhook_deliveries_key("p", "w1"))
    with pytest.raises(NoSuchWebhookError, match="no webhook 'w1'"):
        get_webhook(r, "p", "w1")
    with pytest.raises(NoSuchWebhookError):
        delete_webhook(r, "p", "w1")


def test_unknown_project_is_refused(r):
    """Every webhook call on a project that does not exist raises NoSuchProjectError."""
    for call in (lambda: put_webhook(r, "nope", "w", body()),
                 lambda: list_webhooks(r, "nope"), lambda: get_webhook(r, "nope", "w")):
        with pytest.raises(NoSuchProjectError):
            call()


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"url": "ftp://platform.example/x"}, "url", "http:// or https://"),
    ({"url": "http://"}, "url", "with a host"),
    ({"url": "https://host:port/x"}, "url", "http:// or https://"),
    ({"url": "https://a b/"}, "url", "with a host"),
    ({"url": 7}, "url", "at most 2048"),
    ({"url": "https://x/" + "a" * 2048}, "url", "at most 2048"),
    ({"events": []}, "events", "non-empty list"),
    ({"events": "item.finished"}, "events", "non-empty list"),
    ({"events": ["item.finished", "item.done"]}, "events[1]", "unknown event 'item.done'"),
    ({"events": ["model.trained", "model.trained"]}, "events", "listed twice"),
    ({"secret": "short"}, "secret", "has 5 characters"),
    ({"secret": None}, "secret", "whsec_"),
    ({"secret": "whsec_not base64!"}, "secret", "not valid base64"),
    ({"secret": "whsec_" + base64.b64encode(b"x" * 10).decode()}, "secret", "decodes to 10"),
    ({"secret": "whsec_" + base64.b64encode(b"x" * 65).decode()}, "secret", "decodes to 65"),
    ({"colour": "red"}, "colour", "unknown field"),
])
def test_invalid_subscription_names_the_field_and_the_fix(r, project, changes, field, words):
    """Each bad value is an InvalidInputError naming its field and saying what to send."""
    with pytest.raises(InvalidInputError) as raised:
        put_webhook(r, "p", "w", body(**changes))
    assert raised.value.extra["errors"][0]["field"] == field
    assert words in raised.value.detail, raised.value.detail


def test_missing_field_is_named(r, project):
    """A subscription needs url, events and secret."""
    for missing in ("url", "events", "secret"):
        partial = body()
        del partial[missing]
        with pytest.raises(InvalidInputError, match=f"{missing}: is required"):
            put_webhook(r, "p", "w", partial)


def test_at_most_max_webhooks_per_project(r, project):
    """The 21st webhook is refused with what to do; replacing an existing one still works."""
    for n in range(MAX_WEBHOOKS):
        put_webhook(r, "p", f"w{n}", body())
    with pytest.raises(InvalidInputError, match="delete one"):
        put_webhook(r, "p", "extra", body())
    assert put_webhook(r, "p", "w0", body(events=["model.trained"]))[1] is False


def test_signing_key_of_each_secret_form():
    """whsec_ secrets sign with their decoded bytes (padding optional), plain ones with
    their UTF-8 bytes."""
    assert signing_key(SECRET) == b"taskrank tests: a webhook secret"
    unpadded = "whsec_" + base64.b64encode(b"y" * 25).decode().rstrip("=")
    assert signing_key(unpadded) == b"y" * 25
    assert signing_key(PLAIN) == PLAIN.encode()


def test_subscribed_follows_put_and_delete(r, project):
    """Whether a project takes an event follows its webhooks at once in this process."""
    assert not subscribed(r, "p", "item.finished")
    put_webhook(r, "p", "w", body(events=["model.trained"]))
    assert subscribed(r, "p", "model.trained") and not subscribed(r, "p", "item.finished")
    delete_webhook(r, "p", "w")
    assert not subscribed(r, "p", "model.trained")
