"""API tokens (random, shown once, stored only as SHA-256 hashes) and the web login's
signing secret: who a request acts for, from a bearer token or from a login cookie."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import redis

from taskrank.queue import keys
from taskrank.queue.validation import check_id

ROLES = ("expert", "platform", "admin")  # each role may do all that the ones before it may


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    role: str
    expert_id: str | None = None

    def allows(self, role: str) -> bool:
        """Roles nest: an admin may do all that a platform may, a platform all an expert may."""
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(r: redis.Redis, role: str, expert_id: str | None = None) -> str:
    """Store a new token's hash with its role; return the token (its only appearance)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {list(ROLES)}")
    if (role == "expert") != (expert_id is not None):
        raise ValueError("an expert token needs --expert-id, and only an expert token takes one")
    if expert_id is not None:
        check_id(expert_id, "expert_id")  # as the API checks it: no token it cannot accept
    token = "tr_" + secrets.token_urlsafe(32)
    digest = hash_token(token)
    fields = {"role": role, "created_at": f"{time.time():.3f}"}
    if expert_id is not None:
        fields["expert_id"] = expert_id
    pipe = r.pipeline(transaction=False)  # two slots on a cluster: the set after the token
    pipe.hset(keys.token_key(digest), mapping=fields)
    if role == "admin":
        pipe.sadd(keys.admin_tokens_key(), digest)
    pipe.execute()
    return token


def ensure_admin_token(r: redis.Redis) -> str | None:
    """Create the first admin token if none exists yet; return it, or None when one exists."""
    if r.scard(keys.admin_tokens_key()):
        return None
    return create_token(r, "admin")


def authenticate(r: redis.Redis, token: str, admin_token: str | None = None) -> Principal | None:
    """The principal a bearer token stands for, or None when it is unknown."""
    return principal_for_hash(r, hash_token(token), admin_token)


def principal_for_hash(r: redis.Redis, token_hash: str,
                       admin_token: str | None = None) -> Principal | None:
    """The principal of the token whose SHA-256 is ``token_hash``, or None if it is unknown.

    A login cookie carries the hash instead of the token and is still checked against Redis
    on every request, with the same answer as ``authenticate`` for that token.
    """
    # Comparing hashes keeps the time independent of how much of the token matches.
    if admin_token and hmac.compare_digest(token_hash, hash_token(admin_token)):
        return Principal("admin")
    fields = r.hgetall(keys.token_key(token_hash))
    if not fields:
        return None
    return Principal(fields["role"], fields.get("expert_id"))


def web_secret(r: redis.Redis) -> str:
    """The cookie-signing secret of web logins, created on first use; every web process reads
    the same one.

    Whoever can read it can forge a login, but whoever can read Redis can already create an
    admin token, so it adds no new way in.  Deleting the key logs every browser out.
    """
    secret = r.get(keys.web_secret_key())
    if secret is None:
        r.set(keys.web_secret_key(), secrets.token_hex(32), nx=True)  # the first writer wins
        secret = r.get(keys.web_secret_key())
    return secret
