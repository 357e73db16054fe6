"""Log-ins, log-outs, refusals and account changes in the audit trail of a running pypacs
with ``[auth] mode = "local"``: after ``pypacs user add``, a failed and a successful log-in
of the page's form, a 403, a log-out, ``pypacs token create`` and ``pypacs token revoke``,
the audit file holds exactly those messages, with the users and addresses, each valid.
A good Basic credential is no log-in message of its own; a bad one is a failed log-in.
Refusals are rate-limited per address."""

from __future__ import annotations

import base64
import getpass
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from lxml import etree

from pypacs.audit import Who
from pypacs.web.http.audit import SecurityEvents

from helpers import CLI_ENV, wait_for
from serving import start_pypacs

Validate = Callable[[str], etree._Element]


def cli(config: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pypacs", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=CLI_ENV,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def event(root: etree._Element) -> tuple[str, str, str]:
    """EventID, EventTypeCode (or ""), EventOutcomeIndicator."""
    ident = root.find("EventIdentification")
    assert ident is not None
    kind = ident.find("EventTypeCode")
    return (
        str(ident.find("EventID").get("csd-code")),  # type: ignore[union-attr]
        "" if kind is None else str(kind.get("csd-code")),
        str(ident.get("EventOutcomeIndicator")),
    )


def requestor(root: etree._Element) -> tuple[str, str]:
    found = [p for p in root.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true"]
    assert len(found) == 1, etree.tostring(root)
    return str(found[0].get("UserID")), str(found[0].get("NetworkAccessPointID"))


def subject(root: etree._Element) -> tuple[str, str, str]:
    """The alert's subject: its ID, ParticipantObjectTypeCode and description."""
    obj = root.find("ParticipantObjectIdentification")
    assert obj is not None
    return (
        str(obj.get("ParticipantObjectID")),
        str(obj.get("ParticipantObjectTypeCode")),
        obj.findtext("ParticipantObjectDescription") or "",
    )


def test_log_ins_refusals_and_account_changes(tmp_path: Path, validate: Validate) -> None:
    audit = tmp_path / "audit.log"
    config = tmp_path / "pypacs.toml"
    config.write_text(
        f'[auth]\nmode = "local"\n[audit]\npath = "{audit}"\n'
        f'[storage]\npath = "{tmp_path / "data"}"\n'
    )
    srv = start_pypacs(tmp_path / "data", "--config", str(config))
    try:
        cli(config, "user", "add", "alice", "--role", "reader", "--password-stdin",
            stdin="alice-password\n")  # fmt: skip
        url = f"http://127.0.0.1:{srv.http_port}"
        with httpx.Client(base_url=url, timeout=60) as http:
            wrong = http.post("/api/session", data={"name": "alice", "password": "nope-nope"})
            assert wrong.status_code == 401
            good = http.post("/api/session", data={"name": "alice", "password": "alice-password"})
            assert good.status_code == 200 and "pypacs_session" in http.cookies
            # A good Basic credential is used, not logged in: only the 403 is recorded.
            basic = base64.b64encode(b"alice:alice-password").decode()
            refused = http.post(
                "/dicom-web/studies",
                content=b"",
                headers={"Authorization": f"Basic {basic}", "Content-Type": "application/dicom"},
            )
            assert refused.status_code == 403
            assert http.delete("/api/session", headers={"Origin": url}).status_code == 204
        made = cli(config, "token", "create", "alice")
        assert made.strip()
        listing = cli(config, "token", "list", "alice").splitlines()
        token_id = listing[1].split()[0]
        cli(config, "token", "revoke", token_id)
        wait_for(lambda: len(audit.read_text().splitlines()) >= 8, timeout=60)
    finally:
        srv.stop()
    roots = [validate(line) for line in audit.read_text().splitlines()]
    changed = ("110113", "110137", "0")
    assert [event(r) for r in roots] == [
        ("110100", "110120", "0"),  # application start
        changed,  # pypacs user add
        ("110114", "110122", "4"),  # the failed log-in
        ("110114", "110122", "0"),  # the log-in
        ("110113", "110132", "4"),  # the 403
        ("110114", "110123", "0"),  # the log-out
        changed,  # pypacs token create
        changed,  # pypacs token revoke
        ("110100", "110121", "0"),  # application stop
    ]
    _, added, failed, logged_in, forbidden, logged_out, created, revoked, _ = roots
    runner = (getpass.getuser(), socket.gethostname())
    for root in (added, created, revoked):
        assert requestor(root) == runner
    assert subject(added) == ("alice", "1", "user alice added with the reader role")
    assert subject(created)[:2] == ("alice", "1")
    assert subject(revoked) == ("alice", "1", f"token {token_id} of user alice revoked")
    for root in (failed, logged_in, logged_out):
        assert requestor(root) == ("alice", "127.0.0.1")
    assert requestor(forbidden) == ("alice", "127.0.0.1")
    reason = subject(forbidden)[2]
    assert reason.startswith("HTTP 403 Forbidden: POST /dicom-web/studies")
    assert "needs the writer role" in reason


def test_a_bad_basic_credential_is_a_failed_log_in_and_no_credential_an_alert(
    tmp_path: Path, validate: Validate
) -> None:
    audit = tmp_path / "audit.log"
    srv = start_pypacs(tmp_path / "data", "--auth-mode", "local", "--audit-path", str(audit))
    try:
        url = f"http://127.0.0.1:{srv.http_port}"
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("/dicom-web/studies", auth=("mallory", "guess-1")).status_code == 401
            assert http.get("/dicom-web/studies").status_code == 401
        wait_for(lambda: len(audit.read_text().splitlines()) >= 3, timeout=60)
    finally:
        srv.stop()
    roots = [validate(line) for line in audit.read_text().splitlines()]
    assert [event(r) for r in roots][1:3] == [
        ("110114", "110122", "4"),
        ("110113", "110132", "4"),
    ]
    assert requestor(roots[1]) == ("mallory", "127.0.0.1")
    assert requestor(roots[2]) == ("anonymous", "127.0.0.1")
    assert (
        subject(roots[2])[2]
        == "HTTP 401 Unauthorized: GET /dicom-web/studies: no credentials given"
    )


class _Recorder:
    enabled = True

    def __init__(self) -> None:
        self.alerts: list[tuple[Who, str]] = []
        self.logins: list[tuple[Who, bool]] = []

    def security_alert(self, who: Who, reason: str) -> None:
        self.alerts.append((who, reason))

    def login(self, who: Who, success: bool) -> None:
        self.logins.append((who, success))


def test_refusals_are_rate_limited_per_address_and_counted() -> None:
    now = [100.0]
    recorder = _Recorder()
    events = SecurityEvents(recorder, clock=lambda: now[0])  # type: ignore[arg-type]
    a, b = Who("anonymous", "10.0.0.1"), Who("anonymous", "10.0.0.2")
    for _ in range(5):
        events.refused(a, 401, "GET /x")
    events.refused(b, 403, "GET /y")
    scope: dict[str, object] = {}
    events.login(scope, "eve", "10.0.0.1", False)  # another kind: not held back
    events.login(scope, "eve", "10.0.0.1", False)
    events.login(scope, "eve", "10.0.0.1", True)  # a success always
    assert scope["pypacs.audit.covered"] is True
    assert [(w.address, r) for w, r in recorder.alerts] == [
        ("10.0.0.1", "HTTP 401 Unauthorized: GET /x"),
        ("10.0.0.2", "HTTP 403 Forbidden: GET /y"),
    ]
    assert [ok for _, ok in recorder.logins] == [False, True]
    now[0] += 1.5
    events.refused(a, 429, "POST /api/session")
    assert recorder.alerts[-1][1] == (
        "HTTP 429 Too Many Requests: POST /api/session "
        "(4 more refusals from this address not recorded one by one)"
    )
    events.refused(a, 401, "GET /x")  # within the second again
    assert len(recorder.alerts) == 3
