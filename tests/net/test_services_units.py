"""The pieces of net/services.py that need no server: identifiers between bytes and data
sets (deflate bounded), and the offer table negotiation answers from."""

from __future__ import annotations

import struct
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from pypacs.net import pdu
from pypacs.net.acceptor import negotiate
from pypacs.net.identifier import (
    MAX_IDENTIFIER_BYTES,
    IdentifierError,
    decode_identifier,
    encode_identifier,
)
from pypacs.net.negotiation import Offers, storage_classes

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PRIVATE = "1.3.6.1.4.1.9590.100.1.2.999"


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ],
)
def test_identifier_round_trip(syntax: str) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Doe^Jane"
    ds.FailedSOPInstanceUIDList = ["1.2.3", "1.2.4"]
    back = decode_identifier(encode_identifier(ds, syntax), syntax)
    assert (back.QueryRetrieveLevel, str(back.PatientName)) == ("STUDY", "Doe^Jane")
    assert list(back.FailedSOPInstanceUIDList) == ["1.2.3", "1.2.4"]


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


# Rows as a US of three bytes (a US holds two), on its own and inside a sequence's item.
_BAD_US = _explicit(0x0028, 0x0010, b"US", b"abc")
_IN_AN_ITEM = (
    _explicit(0x0008, 0x0052, b"CS", b"STUDY ")
    + struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    + struct.pack("<HHI", 0xFFFE, 0xE000, len(_BAD_US))
    + _BAD_US
    + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
)


@pytest.mark.parametrize("data", [_BAD_US, _IN_AN_ITEM], ids=["top-level", "in-an-item"])
def test_a_value_its_vr_cannot_hold_is_refused_at_once(data: bytes) -> None:
    """pydicom reads values when first used: the identifier is read whole at once, so that a
    bad value is a data set that does not parse, not a failure in the middle of a query."""
    with pytest.raises(IdentifierError, match="does not parse"):
        decode_identifier(data, ExplicitVRLittleEndian)


def test_a_deflated_identifier_inflating_past_the_bound_is_refused() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = packer.compress(bytes(MAX_IDENTIFIER_BYTES + 1)) + packer.flush()
    assert len(bomb) < 64 * 1024
    with pytest.raises(IdentifierError, match="inflates past"):
        decode_identifier(bomb, DeflatedExplicitVRLittleEndian)
    with pytest.raises(IdentifierError, match="does not inflate"):
        decode_identifier(b"\x07\x00", DeflatedExplicitVRLittleEndian)  # block type 3


def _rq(
    *contexts: pdu.PresentationContextRQ, roles: tuple[pdu.RoleSelection, ...] = ()
) -> pdu.AssociateRQ:
    return pdu.AssociateRQ(
        "PYPACS", "SCU", contexts, pdu.UserInformation(max_length=16384, roles=roles)
    )


def test_storage_prefers_ours_receiving_and_uncompressed_sending() -> None:
    offers = Offers(storage_classes(), accept_unknown=False)
    both = (ExplicitVRLittleEndian, JPEG2000Lossless)
    receiving = negotiate(_rq(pdu.PresentationContextRQ(1, CT, both)), offers)
    assert receiving.contexts == (
        pdu.PresentationContextAC(1, pdu.PC_ACCEPTANCE, JPEG2000Lossless),
    )
    # A C-GET SCU proposing the SCP role: we send over it, uncompressed first.
    sending = negotiate(
        _rq(pdu.PresentationContextRQ(1, CT, both), roles=(pdu.RoleSelection(CT, False, True),)),
        offers,
    )
    assert sending.contexts == (
        pdu.PresentationContextAC(1, pdu.PC_ACCEPTANCE, ExplicitVRLittleEndian),
    )
    assert sending.roles == (pdu.RoleSelection(CT, False, True),)


@pytest.mark.parametrize("accept_unknown", [True, False])
def test_unknown_storage_classes_follow_the_setting(accept_unknown: bool) -> None:
    offers = Offers(storage_classes(), accept_unknown=accept_unknown)
    decision = negotiate(
        _rq(pdu.PresentationContextRQ(1, PRIVATE, (ExplicitVRLittleEndian,))), offers
    )
    expected = pdu.PC_ACCEPTANCE if accept_unknown else pdu.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED
    assert decision.contexts[0].result == expected


def test_query_retrieve_extended_negotiation_answers_relational_and_combined() -> None:
    offers = Offers(storage_classes(), accept_unknown=False)
    rq = pdu.AssociateRQ(
        "PYPACS",
        "SCU",
        (pdu.PresentationContextRQ(1, STUDY_FIND, (ExplicitVRLittleEndian,)),),
        pdu.UserInformation(extended=(pdu.ExtendedNegotiation(STUDY_FIND, b"\x01\x01\x01"),)),
    )
    decision = negotiate(rq, offers)
    # PS3.4 C.5.1.1: relational and combined date-time accepted, fuzzy matching declined.
    assert decision.extended == (pdu.ExtendedNegotiation(STUDY_FIND, b"\x01\x01\x00"),)
