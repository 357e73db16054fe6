"""The audit trail of the HTTP port: each DICOMweb request that reads, writes or deletes
patient data becomes one audit message (PS3.15 A.5.3) once its answer's status is known.

QIDO-RS is a Query (A.5.3.10) carrying the request target; WADO-RS and WADO-URI are DICOM
Instances Transferred, read (A.5.3.4); STOW-RS is Instances Transferred, created (the route
leaves what it stored per study and SOP class in the scope, ``RECEIVED``); DELETE of a study
is DICOM Study Deleted (A.5.3.5), of series or instances Instances Accessed, delete
(A.5.3.3). Each names the user the request acts for (``scope["pypacs.principal"]``, set by
the authentication middleware; "anonymous" without one) and the client's address.

Log-ins, log-outs and refused requests are ``SecurityEvents``: User Authentication
(A.5.3.12) for each log-in attempt of the web page's form and each failed Basic or Bearer
credential, and for each log-out; Security Alert (A.5.3.11) for each request answered 401,
403 or 429 that no log-in message covers. Failures and refusals are rate-limited per
address and kind (one a second, the rest counted into the next message), so that a flood
of bad requests does not become a flood of messages.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pypacs.audit import Auditor, Outcome, Who

log = logging.getLogger("pypacs.audit")

RECEIVED = "pypacs.audit.received"  # STOW-RS: {study: {SOP class: count}}
PATIENTS = "pypacs.audit.patients"  # STOW-RS: the Patient IDs of what it stored
# Scope keys the authentication middleware and the log-in route leave for the trail: the
# client's address (behind a trusted proxy: the one it names), the user a refused request
# named, why it was refused, and that a log-in message already covers the answer.
ADDRESS = "pypacs.audit.address"
CLAIMED_USER = "pypacs.audit.user"
REASON = "pypacs.audit.reason"
COVERED = "pypacs.audit.covered"
_PRINCIPAL = "pypacs.principal"
# The answers of a request refused for who sent it: Security Alerts.
_REFUSED = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}
# QIDO-RS searches (PS3.18 10.6.1): the target ends with the level searched.
_SEARCH = re.compile(
    r"/dicom-web(?:/studies/[^/]+)?(?:/series/[^/]+)?/(?:studies|series|instances)"
)
_STUDY = re.compile(r"/dicom-web/studies/([^/]+)(/.*)?")
_STOW = re.compile(r"/dicom-web/studies(?:/[^/]+)?")
_WADO_URI = "/wado"
# What a QIDO-RS search is audited as: Study Root C-FIND's SOP class (PS3.4 C.6.2).
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _outcome(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    return Outcome.MINOR_FAILURE if status < 500 else Outcome.SERIOUS_FAILURE


class SecurityEvents:
    """The HTTP port's log-ins, log-outs and refusals, as audit messages.

    A failure or refusal is recorded at most once per ``interval`` seconds for one address
    and kind; the ones left out are counted and named in the next message recorded for it.
    Called from the event loop only (no lock).
    """

    MAX_ADDRESSES = 10_000  # entries kept before the quiet ones are forgotten

    def __init__(
        self,
        auditor: Auditor | None,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.auditor = auditor
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (when, left out since)

    @property
    def enabled(self) -> bool:
        return self.auditor is not None and self.auditor.enabled

    def login(self, scope: Scope, user: str, address: str, success: bool) -> None:
        """PS3.15 A.5.3.12: a log-in attempt (a failed one rate-limited)."""
        scope[COVERED] = True
        if self.auditor is None:
            return
        if success:
            self.auditor.login(Who(user, address), True)
        elif self._admit(address, "login") is not None:
            self.auditor.login(Who(user, address), False)

    def logout(self, user: str, address: str) -> None:
        """PS3.15 A.5.3.12: a log-out of the web page."""
        if self.auditor is not None:
            self.auditor.logout(Who(user, address))

    def refused(self, who: Who, status: int, reason: str) -> None:
        """PS3.15 A.5.3.11: a request answered 401, 403 or 429 (rate-limited)."""
        if self.auditor is None:
            return
        left_out = self._admit(who.address, "refused")
        if left_out is None:
            return
        if left_out:
            reason += f" ({left_out} more refusals from this address not recorded one by one)"
        self.auditor.security_alert(who, f"HTTP {status} {_REFUSED.get(status, '')}: {reason}")

    def _admit(self, address: str, kind: str) -> int | None:
        """How many were left out since the last one recorded, or None: leave this out."""
        now = self._clock()
        key = (address, kind)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= self.MAX_ADDRESSES:
            self._forget(now)
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0

    def _forget(self, now: float) -> None:
        quiet = [k for k, (when, _) in self._last.items() if now - when >= self.interval]
        lost = sum(self._last.pop(k)[1] for k in quiet)
        if lost:
            log.warning("audit: %d refused HTTP requests were counted but not recorded", lost)


class AuditTrail:
    """ASGI middleware: one audit event per DICOMweb request, after its answer began, and a
    Security Alert for each refused request no log-in message covers."""

    def __init__(
        self, app: ASGIApp, auditor: Auditor, events: SecurityEvents | None = None
    ) -> None:
        self.app = app
        self.auditor = auditor
        self.events = events or SecurityEvents(auditor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            self._record(scope, status)

    def _record(self, scope: Scope, status: int) -> None:
        path: str = scope["path"][len(scope.get("root_path", "")) :]
        method: str = scope["method"]
        if status in _REFUSED:  # the request never reached its route's work
            if not scope.get(COVERED):
                who = _who(scope)
                who = who._replace(user=scope.get(CLAIMED_USER) or who.user)
                reason = f"{method} {path}" + (f": {scope[REASON]}" if REASON in scope else "")
                self.events.refused(who, status, reason)
            return
        outcome = _outcome(status)
        if method in ("GET", "HEAD"):
            if _SEARCH.fullmatch(path):
                target = path + "?" + scope.get("query_string", b"").decode("latin-1")
                self.auditor.query(_who(scope), STUDY_ROOT_FIND, target.encode(), "", outcome)
            elif match := _STUDY.fullmatch(path):
                # The Patient participant (PS3.15 A.5.3.4) is left out of WADO's messages:
                # the path names the study only, and its patient would cost a query.
                self.auditor.instances_transferred(_who(scope), [match.group(1)], {}, outcome)
            elif path == _WADO_URI:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                studies = query.get("studyUID", [])
                self.auditor.instances_transferred(_who(scope), studies, {}, outcome)
        elif method == "POST" and _STOW.fullmatch(path):
            received: Mapping[str, Mapping[str, int]] = scope.get(RECEIVED, {})
            if not received and outcome is Outcome.SUCCESS:
                outcome = Outcome.SERIOUS_FAILURE
            patients = scope.get(PATIENTS, ())
            self.auditor.instances_stored(_who(scope), received, outcome, patients=patients)
        elif method == "DELETE" and (match := _STUDY.fullmatch(path)):
            # No Patient participant here either: the path names the study only.
            if match.group(2):
                self.auditor.instances_deleted(_who(scope), match.group(1), outcome)
            else:
                self.auditor.study_deleted(_who(scope), match.group(1), outcome)


def _who(scope: Scope) -> Who:
    principal: Any = scope.get(_PRINCIPAL)
    name = getattr(principal, "name", None) or "anonymous"
    address = scope.get(ADDRESS)
    if address is None:
        client = scope.get("client")
        address = client[0] if client else ""
    return Who(name, address)
