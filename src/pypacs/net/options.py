"""What the DIMSE front door needs to know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pypacs.errors import ConfigError
from pypacs.model.access import ALL_SERVICES, Service
from pypacs.remote.registry import Peers


@dataclass(frozen=True)
class TlsOptions:
    """``[tls]``: the PEM files of pypacs' certificate, its key and the trusted CAs
    (PS3.15 B.9, the BCP 195 profiles); net/tls.py makes the SSL contexts from them."""

    certificate: str
    private_key: str
    ca: str  # "" : none (a client then checks servers against the system's store)
    require_client_certificate: bool

    def check(self) -> None:
        """Each file named is readable and holds PEM of the right kind.

        Raises:
            ConfigError: names the key, the file and what is wrong with it.
        """
        wanted = [
            ("certificate", self.certificate, "CERTIFICATE"),
            ("private_key", self.private_key, "PRIVATE KEY"),
            ("ca", self.ca, "CERTIFICATE"),
        ]
        for key, path, label in wanted:
            if not path:
                continue
            try:
                text = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"[tls] {key} = {path!r}: cannot read: {exc.strerror}") from exc
            # RFC 7468 2: a PEM block starts "-----BEGIN <label>-----"; a key's label may be
            # "RSA PRIVATE KEY", "EC PRIVATE KEY" or "PRIVATE KEY".
            if b"-----BEGIN " not in text or f"{label}-----".encode() not in text:
                raise ConfigError(f"[tls] {key} = {path!r}: expected a PEM file holding {label}")


@dataclass(frozen=True)
class NetOptions:
    """Built by config from the settings, whose table holds every default but the timeouts'."""

    ae_title: str
    host: str
    port: int
    max_associations: int
    max_pdu_size: int
    # PS3.4 C.2.2.2.1 leaves PN case sensitivity to the SCP; users expect insensitive.
    pn_case_insensitive: bool
    max_results: int  # per C-FIND; 0: no maximum
    remotes: Peers
    # C-MOVE: how many associations to move destinations may be open at once.
    max_move_associations: int
    # Storage SOP classes no list knows (private, or newer than the lists): stored too.
    accept_unknown_sop_classes: bool
    # Our own DICOM engine (net/association.py, net/acceptor.py), in seconds: ARTIM
    # (PS3.8 9.1.5: the wait for an A-ASSOCIATE-RQ and for an A-RELEASE-RP), the most a
    # peer may take for the rest of a PDU once it began, the most an association may sit
    # idle between two messages; then how many connections may still be negotiating,
    # in all and from one address.
    artim_timeout: float
    pdu_read_timeout: float
    dimse_idle_timeout: float
    max_negotiating: int
    max_negotiating_per_address: int
    # DICOM over TLS: the certificate files (None: no [tls] files, no TLS at all) and the
    # TLS port beside the plain one (0: none).
    tls: TlsOptions | None
    tls_port: int
    # Access (net/access.py): what calling AE titles not among the remotes may use, and
    # whether an association to another called AE title than ours is rejected.
    unknown_callers: tuple[Service, ...] = ALL_SERVICES
    check_called_ae: bool = True
    # Not settings: how long we wait for a peer (seconds).
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 300.0
