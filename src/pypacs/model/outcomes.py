"""What each of pypacs' errors answers: the DIMSE status (PS3.7 Annex C, PS3.4) and the
HTTP status with its error code (PS3.18 8.7.3, 10.5.3), each one table read in order."""

from __future__ import annotations

from http import HTTPStatus

from pypacs.errors import (
    IndexUnavailable,
    InvalidInstance,
    InvalidKind,
    InvalidQuery,
    NotFound,
    OutOfResources,
    PypacsError,
    StoreError,
    TooManyMatches,
    TranscodeError,
)
from pypacs.model.status import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    UNABLE_TO_PROCESS,
    Status,
)


class Refused(PypacsError):
    """A request refused with a status of its own (the status says why)."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# InvalidInstance.kind → status. PS3.4 B.2.3: a file that is no DICOM or does not parse
# "cannot be understood"; anything else wrong with it "does not match the SOP Class", as
# does an instance of another study than a STOW-RS request names (PS3.18 10.5.3.1).
INSTANCE_STATUS: dict[InvalidKind, Status] = {
    InvalidKind.NOT_DICOM: Status.CANNOT_UNDERSTAND,
    InvalidKind.UNPARSABLE: Status.CANNOT_UNDERSTAND,
    InvalidKind.MISMATCH: Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    InvalidKind.DICOMDIR: Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    InvalidKind.OTHER_STUDY: Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    # PS3.18 I.2.2 Table I.2-2.
    InvalidKind.SYNTAX_NOT_ACCEPTED: Status.TRANSFER_SYNTAX_NOT_SUPPORTED,
}

# (exception type, status), the first whose type matches wins.
DIMSE_STATUS: tuple[tuple[type[BaseException], Status], ...] = (
    # PS3.4 C.4.1.1.4: an identifier the standard forbids (an unsupported request: C000).
    (InvalidQuery, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (InvalidInstance, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS),
    # PS3.4 B.2.3 and C.4.1.1.4: Refused, Out of Resources.
    (TooManyMatches, Status.OUT_OF_RESOURCES),
    (OutOfResources, Status.OUT_OF_RESOURCES),
    (IndexUnavailable, Status.OUT_OF_RESOURCES),
    (StoreError, Status.OUT_OF_RESOURCES),
)


def status_for(exc: BaseException) -> Status:
    """The DIMSE failure status that answers ``exc`` (Processing Failure when none fits)."""
    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, InvalidInstance):
        return INSTANCE_STATUS.get(exc.kind, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    if isinstance(exc, InvalidQuery) and exc.unsupported:
        return UNABLE_TO_PROCESS
    for kind, status in DIMSE_STATUS:
        if isinstance(exc, kind):
            return status
    return Status.PROCESSING_FAILURE


# (exception type, HTTP status, error code), the first whose type matches wins;
# PS3.18 8.7.3 (retrieve), 10.5.3 (store), 8.3.4 (search: 413 for too many matches).
HTTP_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (InvalidQuery, HTTPStatus.BAD_REQUEST, "bad-parameter"),
    (NotFound, HTTPStatus.NOT_FOUND, "not-found"),
    (TooManyMatches, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-many-matches"),
    (InvalidInstance, HTTPStatus.BAD_REQUEST, "invalid-instance"),
    (TranscodeError, HTTPStatus.NOT_ACCEPTABLE, "cannot-transcode"),
    (OutOfResources, HTTPStatus.SERVICE_UNAVAILABLE, "out-of-resources"),
    (IndexUnavailable, HTTPStatus.SERVICE_UNAVAILABLE, "index-unavailable"),
    (StoreError, HTTPStatus.INTERNAL_SERVER_ERROR, "store-error"),
)


def http_status_for(exc: BaseException) -> tuple[int, str] | None:
    """The HTTP status and error code that answer ``exc``; None for an unexpected error."""
    for kind, status, code in HTTP_STATUS:
        if isinstance(exc, kind):
            return int(status), code
    return None
