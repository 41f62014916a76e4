"""The operator web page: each project's counts, model quality, queue top and learning curve;
each expert's quality per project and skill, flagged skills with their reason.

Browsers cannot attach a bearer header to a page load, so an operator pastes a platform or
admin token into ``/login`` once.  The cookie it gets back holds only the token's SHA-256,
signed with a secret kept in Redis (so every web process accepts it) and valid for
``LOGIN_SECONDS``; each request looks the hash up again, so the page never outlives its
token.  The cookie is HttpOnly and SameSite=Lax and is not accepted by ``/v1``: the API
still needs the bearer header, so the cookie cannot be used for cross-site writes.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import Forbidden

from taskrank.queue.dashboard import learning_curve, project_overview
from taskrank.queue.exceptions import TaskrankError
from taskrank.queue.projects import get_project, list_projects
from taskrank.queue.quality import exploration_curve
from taskrank.queue.quality_report import experts_quality
from taskrank.queue.tokens import (
    Principal,
    authenticate,
    hash_token,
    principal_for_hash,
    web_secret,
)
from taskrank.queue.validation import check_id
from taskrank.server.auth import current_principal
from taskrank.server.context import redis_client, settings

bp = Blueprint("ui", __name__)

COOKIE = "taskrank_login"
LOGIN_SECONDS = 8 * 3600  # one working day; then the token is asked for again
ROLE = "platform"  # platforms and admins may view the page, experts may not
INDEX_QUEUE = 10
DETAIL_QUEUE = 50
_HEADERS = {
    # Inline <style> only: no scripts, no frames, forms post back here only.
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(web_secret(redis_client()), salt="taskrank-web-login")


def _cookie_principal() -> Principal | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        token_hash = _signer().loads(raw, max_age=LOGIN_SECONDS)
    except BadSignature:  # forged, from an older secret, or expired
        return None
    return principal_for_hash(redis_client(), token_hash, settings().admin_token)


def operator_page(view: Callable) -> Callable:
    """Decorator: a platform or admin login cookie (or bearer header), else the login form."""

    @functools.wraps(view)
    def wrapped(*args: object, **kwargs: object) -> object:
        if request.headers.get("Authorization"):
            principal = current_principal()  # scripts may use the bearer header as on /v1
        else:
            principal = _cookie_principal()
        if principal is None:
            return redirect(url_for("ui.login_form", next=request.script_root + request.path), 303)
        if not principal.allows(ROLE):
            raise Forbidden(f"this page needs a {ROLE} or admin token")
        return view(*args, **kwargs)

    wrapped.required_role = ROLE
    return wrapped


@bp.after_request
def add_headers(response: Response) -> Response:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.errorhandler(TaskrankError)
def page_error(error: TaskrankError) -> tuple[str, int]:
    return render_template("ui/error.html", title=error.title, detail=error.detail), error.status


@bp.get("/")
@operator_page
def index() -> str:
    r = redis_client()
    overviews = [_with_terms(project_overview(r, project, INDEX_QUEUE))
                 for project in list_projects(r)]
    return render_template("ui/index.html", overviews=overviews,
                           flagged=_flagged(experts_quality(r)), rendered_at=_now())


@bp.get("/experts")
@operator_page
def experts_page() -> str:
    experts = experts_quality(redis_client())
    return render_template("ui/experts.html", experts=experts, flagged=_flagged(experts),
                           rendered_at=_now())


@bp.get("/projects/<pid>")
@operator_page
def project_page(pid: str) -> str:
    r = redis_client()
    project = get_project(r, check_id(pid, "project id"))
    overview = _with_terms(project_overview(r, project, DETAIL_QUEUE))
    return render_template("ui/project.html", o=overview, curve=learning_curve(r, pid),
                           explored=exploration_curve(r, pid), rendered_at=_now())


@bp.get("/projects/<pid>/learning-curve.png")
@operator_page
def learning_curve_png(pid: str) -> Response:
    r = redis_client()
    get_project(r, check_id(pid, "project id"))
    return Response(_plot(learning_curve(r, pid), exploration_curve(r, pid)),
                    mimetype="image/png")


@bp.get("/login")
def login_form() -> str:
    return render_template("ui/login.html", next=_safe_next(request.args.get("next")))


@bp.post("/login")
def login() -> Response | tuple[str, int]:
    token = request.form.get("token", "").strip()
    target = _safe_next(request.form.get("next"))
    principal = authenticate(redis_client(), token, settings().admin_token) if token else None
    if principal is None:
        return render_template("ui/login.html", next=target, error="Unknown token."), 401
    if not principal.allows(ROLE):
        error = f"An {principal.role} token cannot view this page; use a platform or admin token."
        return render_template("ui/login.html", next=target, error=error), 403
    response = redirect(target, 303)
    response.set_cookie(COOKIE, _signer().dumps(hash_token(token)), max_age=LOGIN_SECONDS,
                        path=request.script_root or "/", secure=request.is_secure,
                        httponly=True, samesite="Lax")
    return response


@bp.post("/logout")
def logout() -> Response:
    response = redirect(url_for("ui.login_form"), 303)
    response.delete_cookie(COOKIE, path=request.script_root or "/", secure=request.is_secure,
                           httponly=True, samesite="Lax")
    return response


def _safe_next(target: str | None) -> str:
    """Only a path on this site, so the login form cannot send anyone elsewhere."""
    if target and "\\" not in target and target.isprintable():
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/"):
            return target
    return url_for("ui.index")


def _with_terms(overview: dict) -> dict:
    """Add the queue's breakdown terms as ``(name, weight)`` columns, in first-seen order."""
    terms: dict[str, float] = {}
    for item in overview["queue"]:
        for name, term in item["breakdown"].items():
            terms.setdefault(name, term["weight"])
    return {**overview, "terms": list(terms.items())}


def _flagged(experts: list[dict]) -> list[dict]:
    """Every flagged skill of every expert, as rows naming the expert."""
    return [{"expert_id": entry["expert"]["id"], **flag}
            for entry in experts for flag in entry["flagged"]]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plot(points: list[dict], explored: list[dict]) -> bytes:
    """Cross-validated accuracy (biased) per model version and exploration accuracy
    (unbiased, with standard-error bars) against labels trained on; legend below the axes."""
    # Imported here: matplotlib costs each web process time and memory only when used.
    # Figure + the Agg canvas, not pyplot, whose global state is not thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 3.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    scored = [point for point in points if point["accuracy"] is not None]
    if scored:
        _plot_cross_validated(axes, scored)
    if explored:
        axes.errorbar([p["n_labels"] for p in explored], [p["accuracy"] for p in explored],
                      yerr=[p["std_error"] for p in explored], fmt="s", color="#dc2626",
                      capsize=3, label="exploration accuracy ± s.e. (unbiased)")
    if not scored and not explored:
        axes.text(0.5, 0.5, "no model version with an accuracy estimate yet",
                  ha="center", va="center", transform=axes.transAxes, color="#6b7280")
    else:
        x = [p["n_labels"] for p in scored] + [p["n_labels"] for p in explored]
        axes.set_xlim(0, max(x) * 1.1)
        # Below the axes, never over the points.
        figure.legend(loc="lower center", ncol=1, fontsize=8, frameon=False)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("labels trained on")
    axes.set_ylabel("accuracy")
    axes.grid(alpha=0.3)
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_cross_validated(axes: object, scored: list[dict]) -> None:
    x = [point["n_labels"] for point in scored]
    y = [point["accuracy"] for point in scored]
    axes.plot(x, y, marker="o", color="#2563eb",
              label="cross-validated accuracy (biased by selection)")
    for point in scored:
        axes.annotate(f"v{point['version']}", (point["n_labels"], point["accuracy"]),
                      textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
