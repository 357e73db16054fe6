"""DIMSE status codes pypacs sends or reads, each with the section that defines it, and the
category every status belongs to (PS3.7 Annex C)."""

from __future__ import annotations

from enum import Enum, IntEnum


class Category(Enum):
    """The kinds of status PS3.7 C.1 to C.5 distinguish."""

    SUCCESS = "success"
    PENDING = "pending"
    CANCEL = "cancel"
    WARNING = "warning"
    FAILURE = "failure"


class Status(IntEnum):
    SUCCESS = 0x0000  # PS3.7 C.1
    WARNING = 0x0001  # PS3.7 C.3: a general warning
    CANCEL = 0xFE00  # PS3.4 C.4.1.1.4
    PENDING = 0xFF00  # PS3.4 C.4.1.1.4: matches are continuing
    # PS3.4 C.4.1.1.4: matches continue, an optional key was not supported.
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01
    # PS3.4 B.2.3, C-STORE
    OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources (also C-FIND, C.4.1.1.4)
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: Data Set does not match SOP Class
    CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand (C-FIND: Unable to process)
    # PS3.7 Annex C: general failure when nothing more precise applies.
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.5.5 (a failure there; STOW's warning uses it)
    NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C, a general status: Refused: Not Authorized
    UNRECOGNIZED_OPERATION = 0x0211  # PS3.7 C.4.2: Refused, Unrecognized Operation
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # PS3.18 I.2.2 Table I.2-2
    # PS3.4 C.4.2.1.5 (C-MOVE) and C.4.3.1.4 (C-GET)
    SUB_OPERATIONS_WARNING = 0xB000  # complete, with one or more failures or warnings
    UNABLE_TO_CALCULATE_MATCHES = 0xA701  # Refused: Out of Resources
    UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # Refused: Out of Resources
    MOVE_DESTINATION_UNKNOWN = 0xA801
    # PS3.18 I.2.1 lets the conformance statement define warning reasons: ours says the SOP
    # Instance UID was already stored (the "B" of a warning, then 0111H, PS3.7 C.5.5).
    ALREADY_STORED = 0xB111


# PS3.4 C.4.1.1.4: C-FIND's "Identifier Does Not Match SOP Class" has the same code.
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
UNABLE_TO_PROCESS = Status.CANNOT_UNDERSTAND


def category(status: int) -> Category:
    """The category of any status code, ours or a peer's (PS3.7 C.1 to C.5)."""
    if status in (Status.PENDING, Status.PENDING_OPTIONAL_KEYS_UNSUPPORTED):
        return Category.PENDING
    if status == Status.SUCCESS:
        return Category.SUCCESS
    if status == Status.CANCEL:
        return Category.CANCEL
    # PS3.7 C.3: 0001 and Bxxx are warnings; a few service-specific warnings sit elsewhere.
    if status == Status.WARNING or 0xB000 <= status <= 0xBFFF:
        return Category.WARNING
    return Category.FAILURE
