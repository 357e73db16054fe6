"""``[auth] mode = "local"`` on a real server, users and tokens made with the real CLI: each
route group answers no credentials with 401 (and its challenges), a role too low with 403
and the right role with the route's own answer; Basic and Bearer; a revoked or expired
token stops at once; failed log-ins past the limit get 429; the web page's log-in in
Chromium."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from pydicom.dataset import Dataset

from dicomgen import Spec, make_dataset
from dicomweb import CONTENT_TYPE, assert_error, multipart
from helpers import CLI_ENV
from serving import RunningServer, start_pypacs

MAX_FAILED = 3
CONFIG = f'[auth]\nmode = "local"\nmax_failed_logins = {MAX_FAILED}\n'
ROLES = ("reader", "writer", "admin")
PASSWORD = "{}-password"  # each user's password
_instances = itertools.count(1)


@dataclass
class Pacs:
    server: RunningServer
    config: Path
    tokens: dict[str, str]
    study: Dataset  # stored at start, read by the read-only groups

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pypacs", *args, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=CLI_ENV,
            cwd=self.config.parent,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def client(
    pacs: Pacs, user: str | None = None, *, token: str | None = None, address: str | None = None
) -> httpx.Client:
    """A client of the server as ``user`` (Basic), with ``token`` (Bearer), or as no one;
    from another loopback ``address`` when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    auth = (user, PASSWORD.format(user)) if user else None
    transport = httpx.HTTPTransport(local_address=address) if address else None
    return httpx.Client(
        base_url=pacs.url, auth=auth, headers=headers, timeout=60, transport=transport
    )


def new_instance() -> Dataset:
    return make_dataset(Spec("AUTH-1", "Auth^Alice", next(_instances), 1, 1))


def part10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stow(http: httpx.Client, ds: Dataset) -> httpx.Response:
    return http.post(
        "/dicom-web/studies",
        content=multipart([part10(ds)]),
        headers={"Content-Type": CONTENT_TYPE, "Accept": "application/dicom+json"},
    )


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    folder = tmp_path_factory.mktemp("auth")
    config = folder / "pypacs.toml"
    data = folder / "data"
    config.write_text(CONFIG + f'[storage]\npath = "{data}"\n')
    server = start_pypacs(data, "--config", str(config))
    pacs = Pacs(server, config, {}, new_instance())
    try:
        for role in ROLES:
            pacs.cli(
                "user",
                "add",
                role,
                "--role",
                role,
                "--password-stdin",
                stdin=PASSWORD.format(role) + "\n",
            )
            pacs.tokens[role] = pacs.cli("token", "create", role).strip()
        pacs.cli(
            "user",
            "add",
            "victim",
            "--role",
            "reader",
            "--password-stdin",
            stdin="victim-password\n",
        )
        with client(pacs, "admin") as http:
            assert stow(http, pacs.study).status_code == 200
        yield pacs
    finally:
        server.kill()


def assert_challenged(response: httpx.Response, *, invalid_token: bool = False) -> None:
    assert_error(response, 401, "unauthenticated", None)
    challenge = response.headers["WWW-Authenticate"]
    assert 'Basic realm="pypacs", charset="UTF-8"' in challenge
    assert 'Bearer realm="pypacs"' in challenge
    assert ('error="invalid_token"' in challenge) == invalid_token


# -- every route group, for no one and for each role ------------------------------------------

# Group → (method, path template); {study}, {series}, {instance} are the stored study's.
GROUPS = {
    "qido": ("GET", "/dicom-web/studies"),
    "wado-rs": ("GET", "/dicom-web/studies/{study}/metadata"),
    "wado-uri": (
        "GET",
        "/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={instance}"
        "&contentType=application/dicom",
    ),
    "rendered": ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered"),
    "statistics": ("GET", "/api/statistics"),
    "health": ("GET", "/api/health"),
    "openapi": ("GET", "/api/openapi.json"),
    "page-script": ("GET", "/app.js"),
    "stow": ("POST", "/dicom-web/studies"),
    "echo": ("POST", "/api/remotes/NOWHERE/echo"),
    "job": ("GET", "/api/jobs/1-abc"),
}
# The answer each role gets, per group: a route's own answer, or 403.
EXPECTED = {
    "qido": (200, 200, 200),
    "wado-rs": (200, 200, 200),
    "wado-uri": (200, 200, 200),
    "rendered": (200, 200, 200),
    "statistics": (200, 200, 200),
    "health": (200, 200, 200),
    "openapi": (200, 200, 200),
    "page-script": (200, 200, 200),
    "stow": (403, 200, 200),
    "echo": (403, 403, 404),  # admin passes: the remote is unknown
    "job": (403, 403, 404),
}


def request(pacs: Pacs, http: httpx.Client, group: str) -> httpx.Response:
    method, template = GROUPS[group]
    ds = pacs.study
    path = template.format(
        study=ds.StudyInstanceUID, series=ds.SeriesInstanceUID, instance=ds.SOPInstanceUID
    )
    if group == "stow":
        return stow(http, new_instance())
    if method == "POST":
        return http.post(path, json={})
    return http.get(path)


@pytest.mark.parametrize("group", GROUPS)
def test_no_credentials_get_401_with_the_challenges(pacs: Pacs, group: str) -> None:
    with client(pacs) as http:
        assert_challenged(request(pacs, http, group))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_what_the_table_says(pacs: Pacs, group: str, role: str) -> None:
    expected = EXPECTED[group][ROLES.index(role)]
    with client(pacs, role) as basic, client(pacs, token=pacs.tokens[role]) as bearer:
        for http in (basic, bearer):
            response = request(pacs, http, group)
            assert response.status_code == expected, response.text
            if expected == 403:
                message = assert_error(response, 403, "forbidden", None)
                assert f"{role!r} is {role}" in message


def test_delete_needs_admin_and_removes_the_study(pacs: Pacs) -> None:
    ds = new_instance()
    path = f"/dicom-web/studies/{ds.StudyInstanceUID}"
    with client(pacs, "writer") as writer, client(pacs, "admin") as admin:
        assert stow(writer, ds).status_code == 200
        assert_challenged(httpx.delete(pacs.url + path, timeout=60))
        for role in ("reader", "writer"):
            with client(pacs, role) as http:
                assert_error(http.delete(path), 403, "forbidden", None)
        assert admin.get(f"{path}/metadata").status_code == 200
        assert admin.delete(path).status_code in (200, 202, 204)
        assert admin.get(f"{path}/metadata").status_code == 404


def test_public_routes_need_no_credentials(pacs: Pacs) -> None:
    with client(pacs) as http:
        health = http.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        login = http.get("/login")
        assert login.status_code == 200 and 'id="login-form"' in login.text
        assert http.get("/login.js").status_code == 200
        assert http.get("/style.css").status_code == 200


def test_the_page_sends_a_browser_to_log_in(pacs: Pacs) -> None:
    with client(pacs) as http:
        page = http.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 303
        assert page.headers["Location"] == pacs.url + "/login"
        assert_challenged(http.get("/", headers={"Accept": "application/json"}))
    with client(pacs, "reader") as http:
        page = http.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "app.js" in page.text


def test_wrong_password_and_unknown_token_get_401(pacs: Pacs) -> None:
    address = "127.0.0.20"
    with httpx.Client(
        base_url=pacs.url,
        auth=("reader", "not-the-password"),
        transport=httpx.HTTPTransport(local_address=address),
        timeout=60,
    ) as http:
        assert_challenged(http.get("/dicom-web/studies"))
    with client(pacs, token="pypacs_nonesuch", address=address) as http:
        assert_challenged(http.get("/dicom-web/studies"), invalid_token=True)
    with client(pacs, address=address) as http:
        response = http.get("/dicom-web/studies", headers={"Authorization": "Basic !!!"})
        assert_challenged(response)
        assert "malformed" in response.json()["error"]["message"]


def test_a_revoked_token_stops_on_the_next_request(pacs: Pacs) -> None:
    token = pacs.cli("token", "create", "reader").strip()
    listed = pacs.cli("token", "list", "reader").splitlines()[1:]
    token_id = listed[-1].split()[0]
    with client(pacs, token=token, address="127.0.0.21") as http:
        assert http.get("/dicom-web/studies").status_code == 200
        pacs.cli("token", "revoke", token_id)
        assert_challenged(http.get("/dicom-web/studies"), invalid_token=True)


def test_an_expired_token_stops(pacs: Pacs) -> None:
    token = pacs.cli("token", "create", "reader", "--expires", "1").strip()
    with client(pacs, token=token, address="127.0.0.22") as http:
        assert http.get("/dicom-web/studies").status_code == 200
        # A day later, as far as the index is concerned.
        with closing(sqlite3.connect(pacs.server.data / "index.sqlite")) as conn, conn:
            conn.execute(
                "UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00+00:00' "
                "WHERE revoked_at IS NULL AND expires_at IS NOT NULL"
            )
        assert_challenged(http.get("/dicom-web/studies"), invalid_token=True)


def test_failed_log_ins_past_the_limit_get_429(pacs: Pacs) -> None:
    attacker = "127.0.0.30"
    with httpx.Client(
        base_url=pacs.url,
        auth=("victim", "guessed-wrong"),
        transport=httpx.HTTPTransport(local_address=attacker),
        timeout=60,
    ) as http:
        for _ in range(MAX_FAILED):
            assert http.get("/dicom-web/studies").status_code == 401
        refused = http.get("/dicom-web/studies")
        assert_error(refused, 429, "too-many-failed-log-ins", None)
        assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    # The right password changes nothing, from this address, or for this name elsewhere.
    right = ("victim", "victim-password")
    for address in (attacker, "127.0.0.31"):
        with httpx.Client(
            base_url=pacs.url,
            auth=right,
            transport=httpx.HTTPTransport(local_address=address),
            timeout=60,
        ) as http:
            assert http.get("/dicom-web/studies").status_code == 429
    # Another user from another address still gets in.
    with client(pacs, "reader", address="127.0.0.31") as http:
        assert http.get("/dicom-web/studies").status_code == 200
    # The log-in form counts too: the attacker's address is refused there.
    with client(pacs, address=attacker) as http:
        form = http.post("/api/session", data={"name": "reader", "password": "reader-password"})
        assert_error(form, 429, "too-many-failed-log-ins", None)


def test_session_log_in_and_out_over_http(pacs: Pacs) -> None:
    with client(pacs, address="127.0.0.40") as http:
        wrong = http.post("/api/session", json={"name": "writer", "password": "nope-nope"})
        assert_error(wrong, 401, "unauthenticated", None)
        assert "Basic" not in wrong.headers["WWW-Authenticate"]
        assert_error(
            http.post("/api/session", json={"name": "writer"}), 400, "bad-parameter", "password"
        )
        assert_error(
            http.post("/api/session", content=b"x", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported-media-type",
            "Content-Type",
        )
        ok = http.post("/api/session", data={"name": "writer", "password": "writer-password"})
        assert ok.status_code == 200 and ok.json() == {"name": "writer", "role": "writer"}
        cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP
        assert http.get("/api/session").json() == {
            "name": "writer",
            "role": "writer",
            "method": "session",
        }
        # A cookie-authenticated change from a client naming no Origin is refused (CSRF).
        assert_error(stow(http, new_instance()), 403, "cross-origin", "Origin")
        same_origin = {"Origin": pacs.url, "Content-Type": CONTENT_TYPE}
        stored = http.post(
            "/dicom-web/studies", content=multipart([part10(new_instance())]), headers=same_origin
        )
        assert stored.status_code == 200
        assert http.delete("/api/session").status_code == 204
        assert_error(http.get("/api/session"), 401, "unauthenticated", None)


# -- the web page in Chromium -----------------------------------------------------------------


def log_in(page: Page, pacs: Pacs, user: str) -> None:
    """Log in through the page's form as ``user`` and wait for the page to be ready."""
    page.goto(pacs.url + "/")
    expect(page).to_have_url(pacs.url + "/login")
    page.fill("#login-name", user)
    page.fill("#login-password", PASSWORD.format(user))
    page.click("#login-button")
    expect(page).to_have_url(pacs.url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def test_the_page_logs_in_and_out(pacs: Pacs, browser: Browser) -> None:
    shown = make_dataset(Spec("AUTH-PAGE", "Page^Paula", 1, 1, 1))
    with client(pacs, "writer") as http:
        assert stow(http, shown).status_code == 200
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(pacs.url + "/")
        expect(page).to_have_url(pacs.url + "/login")
        page.fill("#login-name", "reader")
        page.fill("#login-password", "wrong-password")
        page.click("#login-button")
        expect(page.locator("#login-status")).to_contain_text("wrong user name or password")
        page.fill("#login-password", "reader-password")
        page.click("#login-button")
        expect(page).to_have_url(pacs.url + "/")
        # What a user sees after logging in: the studies list, the stored study in it.
        expect(page.locator("#view-studies")).to_be_visible()
        expect(page.locator("#studies-status")).to_contain_text("found")
        row = page.locator(f'#studies-table tr[data-study="{shown.StudyInstanceUID}"]')
        expect(row).to_be_visible()
        expect(page.locator("#account-name")).to_have_text("reader (reader)")
        (cookie,) = [c for c in context.cookies() if c["name"] == "pypacs_session"]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        page.fill("#patient-id", "AUTH-PAGE")
        page.click("#search-button")
        expect(page.locator("#studies-status")).to_have_text("1 study found.")
        expect(page.locator("#studies-table tbody tr")).to_have_count(1)
        assert row.locator("td").first.inner_text() == "Page, Paula"
        page.click("#log-out")
        expect(page).to_have_url(pacs.url + "/login")
        assert [c for c in context.cookies() if c["name"] == "pypacs_session"] == []
        page.goto(pacs.url + "/")
        expect(page).to_have_url(pacs.url + "/login")
    finally:
        context.close()
    assert errors == []


# What a reader may not do, the page does not offer; an administrator sees it all.
ADMIN_ONLY_ON_THE_ARCHIVE_PAGE = ("#archive-jobs", "#archive-conflicts")
# The remotes' C-ECHO column (the table itself is hidden here: no remote is configured).
CONNECTION_COLUMN = (
    "() => getComputedStyle(document.querySelector('#remotes-table th:last-child')).display"
)


@pytest.fixture(scope="module")
def role_study(pacs: Pacs) -> Dataset:
    ds = make_dataset(Spec("AUTH-ROLE", "Role^Rita", 1, 1, 1))
    with client(pacs, "writer") as http:
        assert stow(http, ds).status_code == 200
    return ds


@pytest.mark.parametrize("role", ["reader", "admin"])
def test_the_page_offers_what_the_role_allows(
    pacs: Pacs, browser: Browser, role: str, role_study: Dataset
) -> None:
    ds = role_study
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        log_in(page, pacs, role)
        expect(page.locator("#account-name")).to_have_text(f"{role} ({role})")
        page.goto(f"{pacs.url}/#/study/{ds.StudyInstanceUID}")
        expect(page.locator("#study-heading")).to_have_text("Study of Role, Rita")
        expect(page.locator("#series tbody tr")).to_have_count(1)
        series_actions = page.locator("#series tbody tr td").last.locator("button, a")
        study_delete = page.locator("#delete-study")
        if role == "admin":
            expect(study_delete).to_be_visible()
            expect(page.locator("#send-form")).to_be_visible()
            assert series_actions.all_inner_texts() == ["Images", "Delete"]
        else:
            expect(study_delete).to_be_hidden()
            expect(page.locator("#send-form")).to_be_hidden()
            assert series_actions.all_inner_texts() == ["Images"]
            assert page.locator("button.danger:visible").count() == 0
        page.click("#site-nav a[data-view=archive]")
        expect(page.locator("#stat-studies")).not_to_be_empty()
        for selector in ADMIN_ONLY_ON_THE_ARCHIVE_PAGE:
            if role == "admin":
                expect(page.locator(selector)).to_be_visible()
            else:
                expect(page.locator(selector)).to_be_hidden()
        assert page.evaluate(CONNECTION_COLUMN) == ("table-cell" if role == "admin" else "none")
        if role == "admin":
            # The conflicts were asked for and answered (none recorded here).
            expect(page.locator("#conflicts-status")).to_have_text("No conflict to review.")
            expect(page.locator("#jobs-status")).to_have_text(
                "No send was started from this page yet."
            )
    finally:
        context.close()
    assert errors == []
