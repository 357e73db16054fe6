"""What the DIMSE front door needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RemoteAE:
    """A peer declared as ``[remotes.NAME]``."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class NetOptions:
    ae_title: str = "PYPACS"
    host: str = "127.0.0.1"
    port: int = 11112
    max_associations: int = 64
    max_pdu_size: int = 1_048_576
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 300.0
    # PS3.4 C.2.2.2.1 leaves PN case sensitivity to the SCP; users expect insensitive.
    pn_case_insensitive: bool = True
    max_results: int = 0  # per C-FIND; 0: no maximum
    remotes: tuple[RemoteAE, ...] = field(default_factory=tuple)
    # C-MOVE/C-GET: calling AE titles allowed to retrieve (empty: any), and how many
    # associations to move destinations may be open at once.
    retrieve_allowed_aes: tuple[str, ...] = ()
    max_move_associations: int = 8
    # Storage SOP classes no list knows (private, or newer than the lists): stored too.
    accept_unknown_sop_classes: bool = True
