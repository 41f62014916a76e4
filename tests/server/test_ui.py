"""The operator web page: the API's numbers, login by cookie, and a real browser's view."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from html import escape
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from taskrank.queue import keys as K
from taskrank.server.ui import COOKIE, LOGIN_SECONDS
from tests.live import serving
from tests.server.helpers import make_expert, make_items, make_project, next_task, post_items
from tests.server.test_expert_quality import answer_gold_wrong, setup_project

HOSTILE_LABEL = "<b>bold</b>"


class PageNumbers(HTMLParser):
    """The ``data-stat`` cells and queue rows of every project on a rendered page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stats: dict[str, dict[str, str]] = defaultdict(dict)
        self.queues: dict[str, list[str]] = defaultdict(list)
        self._cell: tuple[str, str] | None = None
        self._table: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-stat" in a:
            self._cell = (a["data-project"], a["data-stat"])
            self.stats[a["data-project"]][a["data-stat"]] = ""
        elif tag == "table" and "data-project" in a:
            self._table = a["data-project"]
        elif tag == "tr" and "data-item" in a:
            self.queues[self._table].append(a["data-item"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "dd":
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.stats[self._cell[0]][self._cell[1]] += data.strip()


def api_numbers(client, auth, pid: str) -> dict[str, str]:
    """What /stats and /model report for ``pid``, as the page should print it."""
    stats = client.get(f"/v1/projects/{pid}/stats", headers=auth("platform")).json
    model = client.get(f"/v1/projects/{pid}/model", headers=auth("platform")).json
    accuracy = model["metrics"].get("accuracy")
    assert stats["model_version"] == model["version"]
    return {**{name: str(stats["items"][name]) for name in ("pending", "leased", "labeled",
                                                             "total")},
            "open_leases": str(stats["open_leases"]),
            "labels_last_hour": str(stats["labels"]["last_hour"]),
            "labels_counted": str(stats["labels"]["counted"]),
            "labels_late": str(stats["labels"]["late"]),
            "model_version": "none" if model["version"] is None else str(model["version"]),
            "accuracy": "—" if accuracy is None else str(accuracy),
            "exploration_accuracy": _exploration_text(model["exploration"])}


def _exploration_text(explored: dict) -> str:
    if explored["accuracy"] is None:
        return "—"
    return f"{explored['accuracy']} ± {explored['std_error']} (n {explored['n']})"


def api_queue(client, auth, pid: str, limit: int = 10) -> list[str]:
    response = client.get(f"/v1/projects/{pid}/queue?limit={limit}", headers=auth("platform"))
    return [item["id"] for item in response.json["items"]]


@pytest.fixture
def projects(client, auth) -> list[str]:
    """p1: 10 labels and 2 open leases; p2: nothing labeled, a class name that is HTML."""
    make_project(client, auth, "p1", strategy={"retrain": {"every_labels": 5, "min_labels": 5}})
    post_items(client, auth, make_items(30))
    make_expert(client, auth, capacity=50)
    for n in range(10):
        task = next_task(client, auth).json["task"]
        response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"),
                               json={"label": ["neg", "pos"][n % 2], "seconds_spent": 3})
        assert response.status_code == 201, response.json
    for _ in range(2):
        assert next_task(client, auth).status_code == 200
    make_project(client, auth, "p2", labels=[HOSTILE_LABEL, "ok"])
    post_items(client, auth, make_items(5, seed=3), pid="p2")
    return ["p1", "p2"]


@pytest.fixture
def trained(projects, client, auth, run_jobs) -> list[str]:
    """The same projects after the queued retrain ran: p1 has a model with an accuracy."""
    run_jobs()
    model = client.get("/v1/projects/p1/model", headers=auth("platform")).json
    assert model["version"] and model["metrics"]["accuracy"] is not None
    return projects


def login(client, token: str, next_path: str = "/"):
    return client.post("/login", data={"token": token, "next": next_path})


def test_page_shows_the_stats_and_model_the_api_reports(client, auth, tokens, trained):
    """Each project's counts, leases, labels per hour, model version and accuracy match the API."""
    assert login(client, tokens["platform"]).status_code == 303
    page = PageNumbers(client.get("/").get_data(as_text=True))
    for pid in trained:
        assert page.stats[pid] == api_numbers(client, auth, pid)
    assert page.stats["p1"]["leased"] == "2" and page.stats["p1"]["model_version"] != "none"


def test_page_lists_the_top_ten_of_each_queue_in_api_order(client, auth, tokens, projects):
    """The queue rows are the API queue's top 10 ids, in the same order."""
    login(client, tokens["platform"])
    page = PageNumbers(client.get("/").get_data(as_text=True))
    assert page.queues["p1"] == api_queue(client, auth, "p1") and len(page.queues["p1"]) == 10
    assert page.queues["p2"] == api_queue(client, auth, "p2") and len(page.queues["p2"]) == 5


def test_project_page_matches_the_api(client, auth, tokens, trained):
    """The detail page shows the same numbers and the queue's top 50."""
    login(client, tokens["admin"])
    response = client.get("/projects/p1")
    assert response.status_code == 200
    page = PageNumbers(response.get_data(as_text=True))
    assert page.stats["p1"] == api_numbers(client, auth, "p1")
    assert page.queues["p1"] == api_queue(client, auth, "p1", 50)


def test_learning_curve_is_a_png(client, tokens, trained):
    """The learning curve answers a PNG, linked from the page only once a model exists."""
    login(client, tokens["platform"])
    html = client.get("/").get_data(as_text=True)
    assert "/projects/p1/learning-curve.png" in html
    assert "/projects/p2/learning-curve.png" not in html
    for pid in trained:  # without a model it still draws, saying there is nothing yet
        response = client.get(f"/projects/{pid}/learning-curve.png")
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.data.startswith(b"\x89PNG\r\n\x1a\n")


def test_user_text_is_escaped(client, tokens, projects):
    """A class name holding HTML is shown as text, never as markup."""
    login(client, tokens["platform"])
    html = client.get("/").get_data(as_text=True)
    assert HOSTILE_LABEL not in html and escape(HOSTILE_LABEL) in html


@pytest.mark.parametrize("path", ["/", "/experts", "/projects/p1",
                                  "/projects/p1/learning-curve.png"])
def test_without_login_the_page_redirects_to_the_login_form(client, projects, path):
    """No cookie and no bearer header: a redirect to /login that comes back to the page."""
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/login?next={quote(path)}"
    form = client.get(response.headers["Location"])
    assert form.status_code == 200 and f'value="{path}"' in form.get_data(as_text=True)


def test_login_refuses_unknown_and_expert_tokens(client, tokens):
    """An unknown token is a 401, an expert token a 403; neither gets a cookie."""
    for token, status in (("tr_not-a-token", 401), ("", 401), (tokens["expert"], 403)):
        response = login(client, token)
        assert response.status_code == status
        assert "Set-Cookie" not in response.headers
    assert client.get("/").status_code == 303


def test_login_cookie_is_httponly_lax_and_does_not_hold_the_token(client, tokens):
    """The cookie is HttpOnly, SameSite=Lax, bounded in time, and carries no token."""
    response = login(client, tokens["platform"], "/projects/p1")
    assert response.status_code == 303 and response.headers["Location"] == "/projects/p1"
    header = response.headers["Set-Cookie"]
    assert header.startswith(f"{COOKIE}=") and "HttpOnly" in header and "SameSite=Lax" in header
    assert f"Max-Age={LOGIN_SECONDS}" in header and "Path=/" in header
    assert tokens["platform"] not in header and tokens["platform"][3:] not in header
    assert client.get("/").status_code == 200


def test_forged_or_orphaned_cookies_are_refused(client, r, tokens):
    """A tampered cookie, or one signed with a secret since deleted, sends back to the login."""
    login(client, tokens["platform"])
    value = client.get_cookie(COOKIE).value
    client.set_cookie(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert client.get("/").status_code == 303
    client.set_cookie(COOKIE, value)
    assert client.get("/").status_code == 200
    r.delete(K.web_secret_key())  # rotating the secret logs every browser out
    assert client.get("/").status_code == 303


def test_logout_clears_the_cookie(client, tokens):
    """After logging out the page asks for a token again."""
    login(client, tokens["platform"])
    response = client.post("/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert client.get_cookie(COOKIE) is None
    assert client.get("/").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example",
                                    "javascript:alert(1)", ""])
def test_login_only_redirects_within_the_site(client, tokens, target):
    """``next`` must be a local path; anything else lands on the project list."""
    response = login(client, tokens["platform"], target)
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_bearer_header_also_works_and_roles_are_checked(client, auth, projects):
    """Scripts may send the bearer header: platform and admin see the page, experts get 403."""
    assert client.get("/", headers=auth("platform")).status_code == 200
    assert client.get("/", headers=auth("admin")).status_code == 200
    response = client.get("/", headers=auth("expert"))
    assert response.status_code == 403 and response.mimetype == "application/problem+json"


def test_unknown_project_is_a_404_page(client, tokens):
    """A missing project answers 404 as an HTML page that says so."""
    login(client, tokens["platform"])
    response = client.get("/projects/nope")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "no project" in response.get_data(as_text=True).lower()


def test_pages_forbid_scripts_and_framing(client, tokens):
    """Every page carries a CSP without scripts, no framing, and no caching."""
    login(client, tokens["platform"])
    for path in ("/", "/experts", "/login"):
        headers = client.get(path).headers
        assert "script-src" not in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-store"


@pytest.fixture
def live_url(app, tokens):
    """The app in a real WSGI server on 127.0.0.1, plus a page that logs a browser in.

    ``/__test-login`` (test-only, same origin) posts the platform token to the real /login
    form, so the browser ends up on the dashboard with the cookie a person would get.
    """
    form = (f'<form method="post" action="/login"><input name="token" '
            f'value="{tokens["platform"]}"><input name="next" value="/"></form>'
            '<script>document.forms[0].submit()</script>').encode()

    def wsgi(environ, start_response):
        if environ["PATH_INFO"] == "/__test-login":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [form]
        return app(environ, start_response)

    with serving(wsgi) as url:
        yield url


@pytest.fixture
def chromium() -> str:
    """Debian's chromium, or a skip saying which package to install."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("needs Debian's chromium package: apt-get install chromium")
    return path


def test_browser_renders_the_api_numbers(chromium, client, auth, trained, live_url, tmp_path):
    """Headless Chromium logs in through the form and sees the API's counts and queue."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
               f"{live_url}/__test-login"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    page = PageNumbers(done.stdout)
    assert set(page.stats) == set(trained), done.stdout[:2000]
    for pid in trained:
        assert page.stats[pid] == api_numbers(client, auth, pid)
        assert page.queues[pid] == api_queue(client, auth, pid)


@pytest.fixture
def explored(trained, client, auth, r, run_jobs) -> str:
    """p1 after 6 exploration labels (leases marked as CLAIM marks them) and a retrain."""
    for n in range(6):
        task = next_task(client, auth).json["task"]
        r.hset(K.task_key("p1", task["id"]), "ex", 1)
        response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"),
                               json={"label": ["neg", "pos"][n % 2]})
        assert response.status_code == 201, response.json
    assert client.post("/v1/projects/p1/retrain", headers=auth("platform")).status_code == 202
    run_jobs()
    return "p1"


def test_page_shows_exploration_accuracy_beside_cv_and_says_which_is_biased(
        client, auth, tokens, explored, tmp_path):
    """Both estimates appear as the API reports them, each named unbiased or biased, and
    the learning curve still draws with the exploration points."""
    login(client, tokens["platform"])
    html = client.get(f"/projects/{explored}").get_data(as_text=True)
    numbers = api_numbers(client, auth, explored)
    assert PageNumbers(html).stats[explored] == numbers
    assert numbers["exploration_accuracy"].endswith("(n 6)")
    assert "exploration accuracy (unbiased)" in html and "CV accuracy (biased" in html
    assert escape("(selection bias)") in html and 'data-table="exploration"' in html
    response = client.get(f"/projects/{explored}/learning-curve.png")
    assert response.status_code == 200 and response.data.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "curve.png").write_bytes(response.data)


class QualityRows(HTMLParser):
    """The ``data-field`` cells of each expert's quality rows, and the flagged rows."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
        self.flagged: list[dict[str, str]] = []
        self._expert: str | None = None
        self._row: tuple[str, str, str] | None = None
        self._field: str | None = None
        self._in_flagged = False
        self._cells: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("data-table") == "quality":
            self._expert = a["data-expert"]
        elif a.get("data-table") == "flagged":
            self._in_flagged = True
        elif tag == "tr" and self._expert and "data-skill" in a:
            self._row = (self._expert, a["data-project"], a["data-skill"])
        elif tag == "tr" and self._in_flagged and "data-skill" in a:
            self._cells = []
        elif tag == "td" and self._cells is not None:
            self._cells.append("")
        if tag == "td" and self._row and "data-field" in a:
            self._field = a["data-field"]
            self.rows[self._row][self._field] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._field = None
        elif tag == "tr" and self._cells is not None:
            self.flagged.append(dict(zip(("expert_id", "project_id", "skill", "reason"),
                                         self._cells, strict=True)))
            self._cells = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._expert = None
        elif tag == "section":
            self._in_flagged = False

    def handle_data(self, data: str) -> None:
        if self._field:
            self.rows[self._row][self._field] += data.strip()
        elif self._cells is not None and self._cells:
            self._cells[-1] += data.strip()


def api_quality_rows(client, auth, eid: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """What GET /v1/experts/{eid} reports per project and skill, as the page prints it."""
    expert = client.get(f"/v1/experts/{eid}", headers=auth("platform")).json
    rows = {}
    for pid, skills in expert["quality"].items():
        for tag, q in skills.items():
            low, high = q["accuracy_interval"]
            rows[(eid, pid, tag)] = {
                "status": q["status"], "gold_answered": str(q["gold_answered"]),
                **{name: "—" if q[name] is None else str(q[name])
                   for name in ("gold_accuracy", "agreement")},
                "accuracy": f"{q['accuracy']} [{low}, {high}]", "labels": str(q["labels"]),
                "hours": str(q["hours"]), "dollars": f"{q['dollars']:.2f}",
                **({"reason": q["reason"]} if "reason" in q else {})}
    return rows


@pytest.fixture
def rated(client, auth) -> dict:
    """e1 flagged on cardio in p1 (3 wrong gold answers) and qualifying in p2 (1); e2
    declared, never at work."""
    setup_project(client, auth, min_accuracy=0.9)
    answer_gold_wrong(client, auth, 3)
    setup_project(client, auth, min_accuracy=0.9, pid="p2")
    answer_gold_wrong(client, auth, 1, pid="p2")
    make_expert(client, auth, "e2")
    return client.get("/v1/experts/e1", headers=auth("platform")).json


def test_experts_page_shows_each_experts_quality_as_the_api_reports(client, auth, tokens,
                                                                    rated):
    """Every (expert, project, skill) row holds the API's numbers, status and reason; an
    expert with no record says so."""
    login(client, tokens["platform"])
    response = client.get("/experts")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    page = QualityRows(html)
    assert page.rows == {**api_quality_rows(client, auth, "e1"),
                         **api_quality_rows(client, auth, "e2")}
    assert {row["status"] for row in page.rows.values()} == {"flagged", "qualifying"}
    assert 'id="expert-e2"' in html and "No label, gold answer or agreement" in html


@pytest.mark.parametrize("path", ["/", "/experts"])
def test_flagged_skills_and_their_reason_are_shown_first(client, tokens, rated, path):
    """The project list and the experts page show every flagged skill and its reason
    before any project or expert."""
    login(client, tokens["platform"])
    html = client.get(path).get_data(as_text=True)
    expected = [{"expert_id": "e1", **flag} for flag in rated["flagged"]]
    assert len(expected) == 1 and QualityRows(html).flagged == expected
    assert html.index('data-table="flagged"') < html.index('<section class="card" id=')
