"""The DIMSE status codes pypacs sends, each with the section that defines it."""

from __future__ import annotations

from enum import IntEnum

from pypacs.errors import (
    IndexUnavailable,
    InvalidInstance,
    OutOfResources,
    PypacsError,
    StoreError,
)
from pypacs.query.types import InvalidQuery, TooManyMatches


class Status(IntEnum):
    SUCCESS = 0x0000  # PS3.7 C.1
    CANCEL = 0xFE00  # PS3.4 C.4.1.1.4
    PENDING = 0xFF00  # PS3.4 C.4.1.1.4: matches are continuing
    # PS3.4 B.2.3, C-STORE
    OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources (also C-FIND, C.4.1.1.4)
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: Data Set does not match SOP Class
    CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand (C-FIND: Unable to process)
    # PS3.7 Annex C: general failure when nothing more precise applies.
    PROCESSING_FAILURE = 0x0110
    NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C, a general status: Refused: Not Authorized
    # PS3.4 C.4.2.1.5 (C-MOVE) and C.4.3.1.4 (C-GET)
    SUB_OPERATIONS_WARNING = 0xB000  # complete, with one or more failures or warnings
    UNABLE_TO_CALCULATE_MATCHES = 0xA701  # Refused: Out of Resources
    UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # Refused: Out of Resources
    MOVE_DESTINATION_UNKNOWN = 0xA801


class Refused(PypacsError):
    """A request refused with a status of its own (the status says why)."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# PS3.4 C.4.1.1.4: C-FIND's "Identifier Does Not Match SOP Class" has the same code.
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
UNABLE_TO_PROCESS = Status.CANNOT_UNDERSTAND


def status_for(exc: BaseException) -> Status:
    """The failure status that answers ``exc`` (a table, not a chain of special cases)."""
    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, InvalidInstance):
        if exc.kind in ("unparsable", "not-dicom"):
            return Status.CANNOT_UNDERSTAND
        return Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(exc, InvalidQuery):
        return UNABLE_TO_PROCESS if exc.unsupported else IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(exc, TooManyMatches | OutOfResources | IndexUnavailable | StoreError):
        return Status.OUT_OF_RESOURCES
    return Status.PROCESSING_FAILURE
