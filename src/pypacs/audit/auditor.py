"""The Auditor the front doors call: one method per event.

A call costs the caller a small tuple put on a bounded queue (no XML, no I/O); one thread
builds each message (``messages``) and hands it to the sinks. A full queue drops the event
and counts it (logged, rate-limited): a stuck audit destination never blocks or fails a
request. DICOM associations are audited per association where PS3.15 A.5.3.4 allows it:
one DICOM Instances Transferred message per study at the association's end, listing the
SOP classes and their counts.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from pypacs.audit import messages
from pypacs.audit.messages import Outcome, Source, Studies, Who
from pypacs.audit.options import AuditOptions
from pypacs.audit.sinks import Drops, FileSink, SyslogSink

log = logging.getLogger("pypacs.audit")

__all__ = ["AssociationAudit", "Auditor", "NullAuditor", "Outcome", "Who", "open_auditor"]

_STOP_TIMEOUT = 5.0  # seconds the queue and the syslog sender get at shutdown

Build = Callable[..., str]


def _studies(per_study: Mapping[str, Mapping[str, int]]) -> Studies:
    return tuple(
        (study, tuple(sorted(classes.items()))) for study, classes in sorted(per_study.items())
    )


class AssociationAudit:
    """What one DICOM association did that the trail records at its end: instances
    received, per study and SOP class."""

    __slots__ = ("_auditor", "calling", "failed", "patients", "received", "replaced")

    def __init__(self, auditor: Auditor, calling: Who) -> None:
        self._auditor = auditor
        self.calling = calling
        self.received: dict[str, Counter[str]] = {}
        self.patients: set[str] = set()  # Patient IDs of what was received
        self.failed = 0
        self.replaced = False

    def stored(
        self, study: str, sop_class: str, *, already_held: bool = False, patient: str = ""
    ) -> None:
        """One C-STORE stored (or found already held), of ``patient`` (its Patient ID)."""
        if patient:
            self.patients.add(patient)
        classes = self.received.get(study)
        if classes is None:
            classes = self.received[study] = Counter()
        classes[sop_class] += 1
        self.replaced = self.replaced or already_held

    def store_failed(self) -> None:
        self.failed += 1

    def ended(self) -> None:
        """The association is over: one message per study received (PS3.15 A.5.3.4)."""
        if self.received or self.failed:
            outcome = Outcome.MINOR_FAILURE if self.failed else Outcome.SUCCESS
            if not self.received:
                outcome = Outcome.SERIOUS_FAILURE
            self._auditor.instances_stored(
                self.calling,
                self.received,
                outcome,
                already_held=self.replaced,
                patients=self.patients,
            )


class Auditor:
    """Records audit events; ``close`` sends what waits and stops."""

    enabled = True

    def __init__(self, options: AuditOptions) -> None:
        """Raises:
        ConfigError: the file cannot be opened, or the TLS files cannot be read.
        """
        self.source = Source(options.ae_title, socket.gethostname())
        self.sinks: list[FileSink | SyslogSink] = []
        try:
            if options.path:
                self.sinks.append(FileSink(options.path))
            if options.syslog:
                self.sinks.append(
                    SyslogSink(
                        options.syslog,
                        options.queue_size,
                        ca=options.tls_ca,
                        certificate=options.tls_certificate,
                        private_key=options.tls_private_key,
                    )
                )
        except BaseException:
            self._close_sinks()
            raise
        self.drops = Drops("queue")
        self._queue: queue.Queue[tuple[Build, float, tuple[Any, ...]] | None] = queue.Queue(
            options.queue_size
        )
        self._thread = threading.Thread(target=self._run, name="pypacs-audit", daemon=True)
        self._thread.start()

    def __enter__(self) -> Auditor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        """Events or messages dropped so far, for a full queue or a failing destination."""
        return self.drops.count + sum(s.drops.count for s in self.sinks)

    def _put(self, build: Build, *args: Any) -> None:
        try:
            self._queue.put_nowait((build, time.time(), args))
        except queue.Full:
            self.drops.add("queue full")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            build, when, args = item
            try:
                message = build(self.source, when, *args)
            except Exception:
                log.exception("audit: cannot build a %s message", build.__name__)
                continue
            for sink in self.sinks:
                sink.write(message)

    def close(self) -> None:
        """Write what waits (syslog: for a few seconds at most), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=_STOP_TIMEOUT)
        self._thread.join(_STOP_TIMEOUT)
        self._close_sinks()

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            if isinstance(sink, SyslogSink):
                sink.close(_STOP_TIMEOUT)
            else:
                sink.close()

    # -- the events --

    def application_started(self) -> None:
        """PS3.15 A.5.3.1: pypacs started, by the user running it."""
        self._put(messages.application_activity, True, _launcher())

    def application_stopped(self) -> None:
        """PS3.15 A.5.3.1: pypacs stopped."""
        self._put(messages.application_activity, False, _launcher())

    def association_started(self, calling_ae: str, address: str) -> AssociationAudit:
        """An association was accepted; what it does is recorded at ``ended()``."""
        return AssociationAudit(self, Who(calling_ae.strip(), address, ae=True))

    def association_refused(self, calling_ae: str, called_ae: str, address: str, why: str) -> None:
        """PS3.15 A.5.3.11: an A-ASSOCIATE-RQ refused (Security Alert, Node Authentication)."""
        calling = calling_ae.strip()
        reason = f"association from {calling!r} to {called_ae.strip()!r} refused: {why}"
        self.security_alert(
            Who(calling, address, ae=True),
            reason,
            subject=f"{calling}@{address}",
            type_code=messages.NODE_AUTHENTICATION,
        )

    def instances_stored(
        self,
        sender: Who,
        per_study: Mapping[str, Mapping[str, int]],
        outcome: Outcome,
        *,
        already_held: bool = False,
        patients: Iterable[str] = (),
    ) -> None:
        """PS3.15 A.5.3.4: instances received from ``sender`` (C-STORE, STOW-RS); action
        C, or U when some were already held; ``patients``: their Patient IDs."""
        self._put(
            messages.instances_transferred,
            "U" if already_held else "C",
            sender,
            None,  # the receiver: this pypacs
            None,
            _studies(per_study),
            outcome,
            tuple(sorted(set(patients))),
        )

    def instances_transferred(
        self,
        destination: Who,
        studies: Iterable[str],
        sop_classes: Mapping[str, int],
        outcome: Outcome,
        *,
        requestor: Who | None = None,
        patients: Iterable[str] = (),
    ) -> None:
        """PS3.15 A.5.3.4: instances sent to ``destination`` (C-GET, C-MOVE, WADO); the
        requestor when it is not the destination (C-MOVE); ``patients``: their Patient IDs
        where the caller knows them."""
        classes = tuple(sorted(sop_classes.items()))
        self._put(
            messages.instances_transferred,
            "R",
            None,  # the sender: this pypacs
            destination,
            requestor,
            tuple((s, classes) for s in sorted(set(studies))),
            outcome,
            tuple(sorted(set(patients))),
        )

    def query(
        self,
        requestor: Who,
        sop_class: str,
        query: bytes | bytearray | memoryview,
        transfer_syntax: str,
        outcome: Outcome,
    ) -> None:
        """PS3.15 A.5.3.10: a C-FIND identifier (as sent, in ``transfer_syntax``) or a
        QIDO-RS request target (``transfer_syntax`` empty)."""
        self._put(messages.query, requestor, sop_class, bytes(query), transfer_syntax, outcome)

    def study_deleted(self, who: Who, study: str, outcome: Outcome) -> None:
        """PS3.15 A.5.3.5: a study deleted."""
        self._put(messages.study_deleted, who, study, outcome)

    def instances_deleted(self, who: Who, study: str, outcome: Outcome) -> None:
        """PS3.15 A.5.3.3: series or instances of ``study`` deleted (Instances Accessed, D)."""
        self._put(messages.instances_accessed, "D", who, ((study, ()),), outcome)

    def login(self, who: Who, success: bool) -> None:
        """PS3.15 A.5.3.12: a log-in attempt."""
        outcome = Outcome.SUCCESS if success else Outcome.MINOR_FAILURE
        self._put(messages.user_authentication, True, who, outcome)

    def logout(self, who: Who) -> None:
        """PS3.15 A.5.3.12: a log-out."""
        self._put(messages.user_authentication, False, who, Outcome.SUCCESS)

    def user_changed(self, who: Who, user: str, what: str) -> None:
        """PS3.15 A.5.3.11: a user, or its tokens, created, changed or removed by ``who``
        (Security Alert, User Security Attributes Changed)."""
        self._put(
            messages.security_alert,
            messages.USER_SECURITY_ATTRIBUTES_CHANGED,
            who,
            user,
            True,
            what,
            Outcome.SUCCESS,
        )

    def token_changed(self, who: Who, user: str, what: str) -> None:
        """An API token of ``user`` issued or revoked (as ``user_changed``)."""
        self.user_changed(who, user, what)

    def security_alert(
        self,
        who: Who,
        reason: str,
        *,
        subject: str = "",
        type_code: messages.Code = messages.USE_OF_RESTRICTED_FUNCTION,
    ) -> None:
        """PS3.15 A.5.3.11: something refused for security reasons."""
        self._put(
            messages.security_alert,
            type_code,
            who,
            subject or f"{who.user}@{who.address}",
            False,
            reason,
            Outcome.MINOR_FAILURE,
        )


class _NullAssociation(AssociationAudit):
    __slots__ = ()

    def stored(
        self, study: str, sop_class: str, *, already_held: bool = False, patient: str = ""
    ) -> None:
        pass

    def store_failed(self) -> None:
        pass

    def ended(self) -> None:
        pass


class NullAuditor(Auditor):
    """No ``[audit]`` destination: every event costs a method call and nothing more."""

    enabled = False

    def __init__(self) -> None:  # no queue, no thread, no sink
        self.sinks = []
        self.drops = Drops("none")
        self._association = _NullAssociation(self, Who("", ""))

    def _put(self, build: Build, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def association_started(self, calling_ae: str, address: str) -> AssociationAudit:
        return self._association


def open_auditor(options: AuditOptions) -> Auditor:
    """An Auditor writing where ``options`` say, or a NullAuditor when they name nothing.

    Raises:
        ConfigError: the audit file cannot be opened, or the TLS files cannot be read.
    """
    return Auditor(options) if options.enabled else NullAuditor()


def _launcher() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"
