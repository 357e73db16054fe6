"""The one exception family of pypacs; a leaf module that imports nothing of ours."""

from __future__ import annotations

from enum import StrEnum


class PypacsError(Exception):
    """Base of every error pypacs raises on purpose."""


class ConfigError(PypacsError):
    """A configuration value is wrong; the message names file, key, value and expectation."""


class StoreError(PypacsError):
    """The blob store could not write, read or delete a blob."""


class OutOfResources(StoreError):
    """No room left (disk full, quota) or the index is unavailable."""


class IndexUnavailable(PypacsError):
    """The SQL index cannot be reached or refused a write for reasons outside the data."""


class IndexConflict(PypacsError):
    """A write met a row another writer (another node) inserted first; retrying resolves it."""


class InvalidKind(StrEnum):
    """Why a received data set is refused; each front door answers each kind its own way."""

    NOT_DICOM = "not-dicom"  # no DICOM file at all
    UNPARSABLE = "unparsable"  # DICOM, but it does not parse (cut short, corrupt)
    MISMATCH = "mismatch"  # does not match its SOP Class, lacks or misforms a UID
    DICOMDIR = "dicomdir"  # a media directory, which is no instance
    OTHER_STUDY = "other-study"  # not of the study the request names (STOW-RS)
    SYNTAX_NOT_ACCEPTED = "syntax-not-accepted"  # a transfer syntax the caller does not take


class InvalidInstance(PypacsError):
    """A received dataset cannot be archived: it does not parse or lacks a required UID.

    ``kind`` tells the front door which answer the standard gives. ``sop_class`` and
    ``sop_instance`` are what the data set (else its File Meta Information) says it is, when
    that could be read: a STOW-RS answer names the instance it refuses.
    """

    def __init__(
        self,
        reason: str,
        kind: InvalidKind = InvalidKind.MISMATCH,
        *,
        sop_class: str | None = None,
        sop_instance: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.sop_class = sop_class
        self.sop_instance = sop_instance


class NotFound(PypacsError):
    """An entity named by its UID is not in the archive."""


class TranscodeError(PypacsError):
    """A stored instance cannot be converted to the transfer syntax a peer accepts."""


class TooManyMatches(PypacsError):
    """More entities match than the configured maximum; the first ones were answered."""


class InvalidQuery(PypacsError):
    """An identifier the standard does not allow; ``tag`` names the offending element."""

    def __init__(
        self,
        reason: str,
        tag: int | None = None,
        *,
        unsupported: bool = False,
        parameter: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag
        # The QIDO-RS query parameter at fault, when the query came over HTTP.
        self.parameter = parameter
        # True when the request is valid but asks for something pypacs cannot do.
        self.unsupported = unsupported


class NotAuthenticated(PypacsError):
    """Credentials are missing, wrong, expired or revoked; ``reason`` says which, for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAuthorized(PypacsError):
    """The credentials are good but grant no right to what was asked (HTTP 403); ``reason``
    says why, for logs (an OIDC token naming none of pypacs' roles, a role too low)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
