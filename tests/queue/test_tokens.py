"""Tokens and login (queue/tokens.py): one lookup for a bearer token and for the hash a login
cookie carries, and the shared signing secret."""

from __future__ import annotations

from taskrank.queue import keys as K
from taskrank.queue.tokens import (
    Principal,
    authenticate,
    create_token,
    hash_token,
    principal_for_hash,
    web_secret,
)
from tests.cluster import both_backends

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def test_a_token_and_its_hash_stand_for_the_same_principal(r):
    """``authenticate`` of a token answers what ``principal_for_hash`` of its hash does, for
    stored tokens, the settings' admin token and unknown ones."""
    expert = create_token(r, "expert", "e1")
    for token, admin in [(expert, None), ("tr_admin", "tr_admin"), ("tr_nope", None)]:
        assert authenticate(r, token, admin) == principal_for_hash(r, hash_token(token), admin)
    assert authenticate(r, expert) == Principal("expert", "e1")
    assert authenticate(r, "tr_admin", "tr_admin") == Principal("admin")
    assert authenticate(r, "tr_nope") is None


def test_the_web_secret_is_made_once_and_shared(r):
    """The first call creates the secret; later calls (any process) read the same one, and
    deleting the key makes a new one."""
    secret = web_secret(r)
    assert len(secret) == 64 and web_secret(r) == secret
    r.delete(K.web_secret_key())
    assert web_secret(r) != secret
