"""Bearer-token authentication and the three nested roles of DESIGN §3."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from taskrank.queue.tokens import ROLES, Principal, authenticate, hash_token
from taskrank.server.context import caches, redis_client, settings


class NotAuthenticated(Unauthorized):
    def get_headers(self, environ=None, scope=None):  # noqa: ANN001 - werkzeug signature
        challenge = ("WWW-Authenticate", 'Bearer realm="taskrank"')
        return [*super().get_headers(environ, scope), challenge]


def current_principal() -> Principal:
    """The principal of the request, authenticating it on first use."""
    if "principal" not in g:
        g.principal = _authenticate_request()
    return g.principal


def _authenticate_request() -> Principal:
    header = request.headers.get("Authorization", "")
    if not header:
        raise NotAuthenticated("send 'Authorization: Bearer <token>'; create a token with "
                               "'taskrank token create --role platform'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("the Authorization header must be 'Bearer <token>'")
    principal = _known_principal(token.strip())
    if principal is None:
        raise NotAuthenticated("unknown token; check it or create a new one")
    return principal


class _Unknown(Exception):
    """Not cached: a token created a moment later (by another process) must work at once."""


def _known_principal(token: str) -> Principal | None:
    def load() -> Principal:
        principal = authenticate(redis_client(), token, settings().admin_token)
        if principal is None:
            raise _Unknown
        return principal

    try:  # keyed by hash, so the cache holds no usable secret
        return caches().principals.get(hash_token(token), load)
    except _Unknown:
        return None


def require(role: str) -> Callable:
    """Decorator: the view needs a token of ``role`` or a role above it."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {list(ROLES)}")

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args: object, **kwargs: object) -> object:
            principal = current_principal()
            if not principal.allows(role):
                raise Forbidden(f"this needs a token of role '{role}' or above (expert < platform "
                                f"< admin); yours has role '{principal.role}'")
            return view(*args, **kwargs)

        wrapped.required_role = role  # read by the OpenAPI document and the fuzz tests
        return wrapped

    return decorator


def acting_expert(requested: str | None) -> str | None:
    """The expert a request acts for: an expert token may only act for itself."""
    principal = current_principal()
    if principal.role != "expert":
        return requested
    if requested is not None and requested != principal.expert_id:
        raise Forbidden(f"an expert token may only act for expert '{principal.expert_id}'")
    return principal.expert_id
