"""Bearer-token authentication and the three nested roles of DESIGN §3."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from taskrank.queue.tokens import ROLES, Principal, authenticate, hash_token
from taskrank.server.context import AppState, state


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
    token = bearer_token(header)
    if token is None:
        raise NotAuthenticated("the Authorization header must be 'Bearer <token>'")
    principal = known_principal(state(), token)
    if principal is None:
        raise NotAuthenticated("unknown token; check it or create a new one")
    return principal


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None when malformed."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class _Unknown(Exception):
    """Not cached: a token created a moment later (by another process) must work at once."""


def known_principal(app_state: AppState, token: str) -> Principal | None:
    """The principal ``token`` stands for (cached briefly), or None when it is unknown."""
    def load() -> Principal:
        principal = authenticate(app_state.redis, token, app_state.settings.admin_token)
        if principal is None:
            raise _Unknown
        return principal

    try:  # keyed by hash, so the cache holds no usable secret
        return app_state.caches.principals.get(hash_token(token), load)
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
    """The expert the request acts for: an expert token may only act for itself."""
    return acting_expert_of(current_principal(), requested)


def acting_expert_of(principal: Principal, requested: str | None) -> str | None:
    """The expert ``principal`` acts for when it names ``requested`` (Forbidden if it may not)."""
    if principal.role != "expert":
        return requested
    if requested is not None and requested != principal.expert_id:
        raise Forbidden(f"an expert token may only act for expert '{principal.expert_id}'")
    return principal.expert_id
