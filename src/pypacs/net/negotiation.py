"""What pypacs' DICOM port offers to a requestor (PS3.8 9.3.3.2, PS3.7 D.3.3.4-5), as the
``Offer`` table net/acceptor.py's ``negotiate`` answers from.

- Verification, and every storage SOP class, taken in the acceptor's order of transfer
  syntaxes (compressed first: what arrives is stored as it arrives).
- A context over which pypacs will *send* stored instances (a C-GET SCU proposed the SCP
  role for a storage SOP class) gets the syntax every stored instance can be sent in
  without risk: uncompressed first, then a lossless one pypacs can encode
  (archive/transcode.py ``sending_syntax``).
- Storage SOP classes no list knows (private ones, or newer than pydicom's dictionary) are
  accepted as storage when ``accept_unknown`` is on, in both roles the requestor proposes.
- The Query/Retrieve classes, with SOP Class Extended Negotiation answered (PS3.4 C.5.1.1).
- ``Allowed`` narrows the table to the services a caller may use (net/access.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import replace

from pypacs.archive.transcode import sending_syntax
from pypacs.model.access import Service
from pypacs.model.sop import (
    QR_FIND,
    QR_GET,
    QR_MOVE,
    QR_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    is_unknown_storage_class,
)
from pypacs.net.acceptor import Offer, query_retrieve_extended
from pypacs.net.access import service_of

VERIFICATION = "1.2.840.10008.1.1"  # PS3.4 A.4

_STORAGE = Offer(
    frozenset(STORAGE_TRANSFER_SYNTAXES),
    scp=True,
    scu=True,  # PS3.4 C.4.3.1: C-GET's sub-operations, through role selection
    choose=sending_syntax,
    preference=STORAGE_TRANSFER_SYNTAXES,
)
_VERIFICATION = Offer(frozenset(STORAGE_TRANSFER_SYNTAXES), preference=STORAGE_TRANSFER_SYNTAXES)


def _query_retrieve(find: bool) -> Offer:
    return Offer(
        frozenset(QR_TRANSFER_SYNTAXES),
        extended=query_retrieve_extended(find),
        preference=QR_TRANSFER_SYNTAXES,
    )


class Offers(Mapping[str, Offer]):
    """The offer for each abstract syntax we accept; unknown storage classes included when
    ``accept_unknown`` (they cannot be listed, so they are recognised on lookup)."""

    def __init__(self, storage_classes: Collection[str], *, accept_unknown: bool) -> None:
        self.storage_classes = frozenset(storage_classes)
        self.accept_unknown = accept_unknown
        find, retrieve = _query_retrieve(True), _query_retrieve(False)
        self._table: dict[str, Offer] = {VERIFICATION: _VERIFICATION}
        self._table.update(dict.fromkeys(self.storage_classes, _STORAGE))
        self._table.update(dict.fromkeys(QR_FIND, find))
        self._table.update(dict.fromkeys((*QR_MOVE, *QR_GET), retrieve))

    def __getitem__(self, key: str) -> Offer:
        offer = self._table.get(key)
        if offer is not None:
            return offer
        if self.accept_unknown and is_unknown_storage_class(key, self.storage_classes):
            return _STORAGE
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class Allowed(Mapping[str, Offer]):
    """``offers`` narrowed to the ``services`` a caller may use: a context of another
    service is answered user-rejection, the result PS3.8 9.3.3.2 gives a refusal of the
    acceptor's own (its abstract syntax *is* supported). A storage context serves C-STORE
    in our SCP role and C-GET's sub-operations in our SCU role (PS3.4 C.4.3.1): each role
    is kept only when its service is allowed."""

    def __init__(self, offers: Mapping[str, Offer], services: frozenset[Service]) -> None:
        self.offers = offers
        self.services = services

    def __getitem__(self, key: str) -> Offer:
        offer = self.offers[key]
        service = service_of(key)
        if service is Service.STORE:
            scp, scu = Service.STORE in self.services, Service.GET in self.services
        else:
            scp = scu = service in self.services
        scp, scu = offer.scp and scp, offer.scu and scu
        return offer if (scp, scu) == (offer.scp, offer.scu) else replace(offer, scp=scp, scu=scu)

    def __iter__(self) -> Iterator[str]:
        return iter(self.offers)

    def __len__(self) -> int:
        return len(self.offers)


def storage_classes() -> frozenset[str]:
    """Every storage SOP class pydicom's dictionary knows, retired included."""
    return STORAGE_SOP_CLASSES
