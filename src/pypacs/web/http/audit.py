"""The audit trail of the HTTP port: each DICOMweb request that reads, writes or deletes
patient data becomes one audit message (PS3.15 A.5.3) once its answer's status is known.

QIDO-RS is a Query (A.5.3.10) carrying the request target; WADO-RS and WADO-URI are DICOM
Instances Transferred, read (A.5.3.4); STOW-RS is Instances Transferred, created (the route
leaves what it stored per study and SOP class in the scope, ``RECEIVED``); DELETE of a study
is DICOM Study Deleted (A.5.3.5), of series or instances Instances Accessed, delete
(A.5.3.3). Each names the user the request acts for (``scope["pypacs.principal"]``, set by
the authentication middleware; "anonymous" without one) and the client's address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pypacs.audit import Auditor, Outcome, Who

RECEIVED = "pypacs.audit.received"  # STOW-RS: {study: {SOP class: count}}
_PRINCIPAL = "pypacs.principal"
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


class AuditTrail:
    """ASGI middleware: one audit event per DICOMweb request, after its answer began."""

    def __init__(self, app: ASGIApp, auditor: Auditor) -> None:
        self.app = app
        self.auditor = auditor

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
        outcome = _outcome(status)
        if method in ("GET", "HEAD"):
            if _SEARCH.fullmatch(path):
                target = path + "?" + scope.get("query_string", b"").decode("latin-1")
                self.auditor.query(_who(scope), STUDY_ROOT_FIND, target.encode(), "", outcome)
            elif match := _STUDY.fullmatch(path):
                self.auditor.instances_transferred(_who(scope), [match.group(1)], {}, outcome)
            elif path == _WADO_URI:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                studies = query.get("studyUID", [])
                self.auditor.instances_transferred(_who(scope), studies, {}, outcome)
        elif method == "POST" and _STOW.fullmatch(path):
            received: Mapping[str, Mapping[str, int]] = scope.get(RECEIVED, {})
            if not received and outcome is Outcome.SUCCESS:
                outcome = Outcome.SERIOUS_FAILURE
            self.auditor.instances_stored(_who(scope), received, outcome)
        elif method == "DELETE" and (match := _STUDY.fullmatch(path)):
            if match.group(2):
                self.auditor.instances_deleted(_who(scope), match.group(1), outcome)
            else:
                self.auditor.study_deleted(_who(scope), match.group(1), outcome)


def _who(scope: Scope) -> Who:
    principal: Any = scope.get(_PRINCIPAL)
    name = getattr(principal, "name", None) or "anonymous"
    client = scope.get("client")
    return Who(name, client[0] if client else "")
