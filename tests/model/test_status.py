"""The statuses' categories (PS3.7 Annex C) and the exception → status tables."""

from __future__ import annotations

import pytest

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
from pypacs.model.outcomes import (
    DIMSE_STATUS,
    HTTP_STATUS,
    INSTANCE_STATUS,
    Refused,
    http_status_for,
    status_for,
)
from pypacs.model.status import Category, Status, category


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidQuery("bad key", 0x00100010), 0xA900),
        (InvalidQuery("cannot do that", unsupported=True), 0xC000),
        (InvalidInstance("no SOP Class UID"), 0xA900),
        (InvalidInstance("not DICOM", InvalidKind.NOT_DICOM), 0xC000),
        (InvalidInstance("cut short", InvalidKind.UNPARSABLE), 0xC000),
        (InvalidInstance("a DICOMDIR", InvalidKind.DICOMDIR), 0xA900),
        (InvalidInstance("study 1.2 is not 1.3", InvalidKind.OTHER_STUDY), 0xA900),
        (InvalidInstance("JPEG", InvalidKind.SYNTAX_NOT_ACCEPTED), 0xC122),
        (TooManyMatches("past 100"), 0xA700),
        (OutOfResources("disk full"), 0xA700),
        (IndexUnavailable("no database"), 0xA700),
        (StoreError("cannot write"), 0xA700),
        (Refused(Status.MOVE_DESTINATION_UNKNOWN, "who?"), 0xA801),
        (NotFound("1.2.3"), 0x0110),
        (TranscodeError("no codec"), 0x0110),
        (PypacsError("ours"), 0x0110),
        (ValueError("anything else"), 0x0110),
    ],
)
def test_dimse_status_of_each_exception(exc: BaseException, status: int) -> None:
    assert status_for(exc) == status


def test_every_row_of_the_dimse_table_is_reachable() -> None:
    """No row is shadowed by an earlier one: each type's own instance gets its row's status."""
    for kind, status in DIMSE_STATUS:
        assert status_for(kind("reason")) is status, kind.__name__
    assert set(INSTANCE_STATUS) == set(InvalidKind)


@pytest.mark.parametrize(
    ("exc", "answer"),
    [
        (InvalidQuery("bad date", parameter="StudyDate"), (400, "bad-parameter")),
        (NotFound("1.2.3"), (404, "not-found")),
        (TooManyMatches("past 100"), (413, "too-many-matches")),
        (InvalidInstance("bad"), (400, "invalid-instance")),
        (TranscodeError("no codec"), (406, "cannot-transcode")),
        (OutOfResources("disk full"), (503, "out-of-resources")),
        (IndexUnavailable("no database"), (503, "index-unavailable")),
        (StoreError("cannot write"), (500, "store-error")),
        (ValueError("unexpected"), None),
    ],
)
def test_http_status_of_each_exception(exc: BaseException, answer: tuple[int, str] | None) -> None:
    assert http_status_for(exc) == answer
    if answer is not None:
        assert type(http_status_for(exc)[0]) is int  # type: ignore[index]


def test_http_table_rows_in_order() -> None:
    # OutOfResources is a StoreError: its row must come first to be reached.
    kinds = [kind for kind, _, _ in HTTP_STATUS]
    assert kinds.index(OutOfResources) < kinds.index(StoreError)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x0000, Category.SUCCESS),
        (0x0001, Category.WARNING),
        (0xB000, Category.WARNING),
        (0xB111, Category.WARNING),
        (0xFE00, Category.CANCEL),
        (0xFF00, Category.PENDING),
        (0xFF01, Category.PENDING),
        (0xA700, Category.FAILURE),
        (0xC123, Category.FAILURE),
        (0x0124, Category.FAILURE),
    ],
)
def test_category(status: int, expected: Category) -> None:
    assert category(status) is expected
