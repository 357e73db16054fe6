"""The audit trail: DICOM audit messages (PS3.15 A.5) for every access to patient data and
every security event, written to a file and sent to a syslog receiver.

``auditor`` holds the ``Auditor`` the front doors call (a method per event, cheap in the
caller's thread: a small tuple put on a bounded queue) and the ``NullAuditor`` used when no
``[audit]`` destination is set; ``messages`` builds the XML in the background thread;
``sinks`` writes it (``FileSink``: one ``write`` per line, ``O_APPEND``; ``SyslogSink``:
RFC 5424 over UDP, RFC 5426, or TLS, RFC 5425). May import ``model`` and ``errors`` only.
"""

from pypacs.audit.auditor import (
    AssociationAudit,
    Auditor,
    NullAuditor,
    Outcome,
    Who,
    open_auditor,
)
from pypacs.audit.options import AuditOptions

__all__ = [
    "AssociationAudit",
    "AuditOptions",
    "Auditor",
    "NullAuditor",
    "Outcome",
    "Who",
    "open_auditor",
]
