"""Presentation context choices pynetdicom's acceptor does not make the way an archive
should (PS3.8 9.3.3.2, PS3.7 D.3.3.4).

- A context over which pypacs will *send* stored instances (a C-GET SCU proposed the SCP
  role for a storage SOP class) gets the syntax every stored instance can be sent in
  without risk: uncompressed first, then a lossless one pypacs can encode; the acceptor's
  own order (compressed first, right for receiving) would make uncompressed instances
  fail or be re-encoded.
- Storage SOP classes no list knows (private ones, or newer than pydicom's dictionary) are
  accepted as storage when ``accept_unknown`` is on, in both roles the requestor proposes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from pypacs.archive.transcode import sending_syntax
from pypacs.model.sop import STORAGE_TRANSFER_SYNTAXES, is_unknown_storage_class

_ACCEPTED = 0x00
_ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03  # PS3.8 Table 9-18


def settle(acse: Any, known: Collection[str], *, accept_unknown: bool) -> None:
    """Adjust an acceptor's negotiated contexts before its A-ASSOCIATE-AC is sent."""
    assoc = acse.assoc
    requested = {cx.context_id: cx for cx in acse.requestor.requested_contexts}
    if accept_unknown:
        roles = {
            str(uid): (item.scu_role, item.scp_role)
            for uid, item in acse.requestor.role_selection.items()
        }
        for cx in list(assoc._rejected_cx):
            uid = str(cx.abstract_syntax)
            proposal = requested.get(cx.context_id)
            if (
                cx.result != _ABSTRACT_SYNTAX_NOT_SUPPORTED
                or proposal is None
                or not is_unknown_storage_class(uid, known)
            ):
                continue
            syntax = _first_supported(proposal.transfer_syntax)
            if syntax is None:
                continue
            cx.transfer_syntax = [syntax]
            cx.result = _ACCEPTED
            cx._as_scp, cx._as_scu = True, False
            if uid in roles:
                # PS3.7 D.3.3.4: the requestor's proposed roles, granted as proposed.
                scu, scp = roles[uid]
                cx._as_scp, cx._as_scu = scu is not False, bool(scp)
                reply = SCP_SCU_RoleSelectionNegotiation()
                reply.sop_class_uid = uid
                reply.scu_role, reply.scp_role = bool(scu), bool(scp)
                acse.acceptor.add_negotiation_item(reply)
            assoc._rejected_cx.remove(cx)
            assoc._accepted_cx[cx.context_id] = cx
    for context_id, cx in assoc._accepted_cx.items():
        proposal = requested.get(context_id)
        if cx.as_scu and proposal is not None:
            syntax = sending_syntax([str(s) for s in proposal.transfer_syntax])
            if syntax is not None:
                cx.transfer_syntax = [syntax]


def _first_supported(proposed: Sequence[str]) -> str | None:
    return next((s for s in STORAGE_TRANSFER_SYNTAXES if s in proposed), None)
