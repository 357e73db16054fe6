"""The sections of the configuration file: one frozen dataclass per section, a typed field per
key with its default, help, check and (where needed) flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from pypacs.config.checks import (
    Check,
    _ae_title,
    _base_url,
    _networks,
    _non_empty,
    _non_negative_int,
    _one_of,
    _origins,
    _port,
    _positive_int,
    _services,
    _storage_url,
    _url_of,
)
from pypacs.model.access import ALL_SERVICES

_T = TypeVar("_T")


def _setting(default: _T, help: str, check: Check | None = None, *, flag: str | None = None) -> _T:
    """A section field: its default, its help, its check and (where the key's name would be
    ambiguous on the command line) its flag."""
    metadata = {"help": help, "check": check, "flag": flag}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: who we are and where we listen."""

    ae_title: str = _setting("PYPACS", "pypacs' own AE title", _ae_title)
    host: str = _setting("127.0.0.1", "address both ports listen on", _non_empty)
    dicom_port: int = _setting(11112, "DICOM port (0 picks a free one)", _port(True))
    http_port: int = _setting(8080, "HTTP port (0 picks a free one)", _port(True))
    max_associations: int = _setting(
        64,
        "associations served at once by the whole server (shared out evenly among workers)",
        _positive_int,
    )
    workers: int = _setting(
        0,
        "processes sharing the DICOM and HTTP ports, each a stateless node over the same "
        "index and store (0: one per core; 1: a single process)",
        _non_negative_int,
    )
    max_pdu_size: int = _setting(1_048_576, "largest PDU we receive (bytes)", _positive_int)
    artim_timeout: int = _setting(
        30,
        "seconds a connection has to send its association request, and a peer its release "
        "reply (PS3.8 ARTIM); then the connection is closed",
        _positive_int,
    )
    pdu_read_timeout: int = _setting(
        30,
        "seconds a peer has to send the rest of a PDU once it began; then A-ABORT",
        _positive_int,
    )
    dimse_idle_timeout: int = _setting(
        300,
        "seconds an association may stay silent between two messages; then A-ABORT",
        _positive_int,
    )
    max_negotiating: int = _setting(
        32,
        "connections still negotiating an association at once; more are closed at once",
        _positive_int,
    )
    max_negotiating_per_address: int = _setting(
        8,
        "connections still negotiating at once from one address; more are closed at once",
        _positive_int,
    )
    dicom_tls_port: int = _setting(
        0,
        "DICOM port over TLS with the [tls] certificate, beside the plain one (0: off; "
        "2762 is the registered port)",
        _port(True),
    )
    http_tls: bool = _setting(False, "serve the HTTP port over HTTPS with the [tls] certificate")


@dataclass(frozen=True)
class StorageSettings:
    """``[storage]``: the archive's folder and what is kept in it."""

    path: str = _setting("pypacs-data", "folder of the archive's files", _non_empty, flag="--data")
    overwrite_duplicates: bool = _setting(
        False, "a SOP Instance UID received again replaces the stored copy"
    )
    reserve_bytes: int = _setting(
        16 * 1024 * 1024,
        "room kept free on the archive's disk so that deletes work when it is full (0: none)",
        _non_negative_int,
    )
    max_instance_bytes: int = _setting(
        4 * 1024**3,
        "largest instance received over DICOM (bytes of its data set; 0: no bound); "
        "a larger one is refused with Out of Resources (A700) and its partial file removed",
        _non_negative_int,
    )
    accept_unknown_sop_classes: bool = _setting(
        True, "store SOP classes no list knows (private ones, newer standard ones) as well"
    )
    check_on_start: bool = _setting(
        True, "re-index orphan files and report missing ones at start-up"
    )
    url: str = _setting(
        "",
        "where the instances' bytes live: empty for files under [storage] path, or "
        '"s3://BUCKET/PREFIX" for an S3-compatible object store ([storage.s3])',
        _storage_url,
        flag="--storage-url",
    )


@dataclass(frozen=True)
class S3Settings:
    """``[storage.s3]``: the S3-compatible object store of ``[storage] url``; credentials come
    the usual way (environment variables or the shared credentials file), never from here."""

    endpoint_url: str = _setting(
        "", "address of the S3 API (empty: AWS's own for the region)", flag="--s3-endpoint-url"
    )
    region: str = _setting(
        "", "the bucket's region (empty: the client's default)", flag="--s3-region"
    )
    orphan_grace_seconds: int = _setting(
        600,
        "an object younger than this with no index row is left alone by the consistency "
        "check (another node may be about to index it); also a file of a blob folder "
        "whose index is on PostgreSQL",
        _non_negative_int,
        flag="--s3-orphan-grace-seconds",
    )


@dataclass(frozen=True)
class DatabaseSettings:
    """``[database]``: the index."""

    url: str = _setting(
        "",
        "SQLAlchemy URL of the index (default: SQLite in the storage folder)",
        flag="--database-url",
    )
    pool_size: int = _setting(
        5,
        "connections each process keeps open to a PostgreSQL index (SQLite: unused)",
        _positive_int,
        flag="--database-pool-size",
    )


@dataclass(frozen=True)
class QuerySettings:
    """``[query]``: how C-FIND and QIDO-RS match."""

    pn_case_insensitive: bool = _setting(
        True, "match person names without regard to case (PS3.4 C.2.2.2.1 leaves it to the SCP)"
    )
    max_results: int = _setting(
        0,
        "most C-FIND matches answered; past it the query fails with 0xA700 (0: no maximum)",
        _non_negative_int,
    )


@dataclass(frozen=True)
class RetrieveSettings:
    """``[retrieve]``: how many moves run at once, and how long a node holds a job."""

    max_move_associations: int = _setting(
        8,
        "associations to C-MOVE destinations open at once; more moves wait",
        _positive_int,
    )
    job_lease_seconds: int = _setting(
        30,
        "seconds a node holds a job it runs before renewing its claim; a job whose lease "
        "ran out (its node died) is taken over by another node",
        _positive_int,
    )


@dataclass(frozen=True)
class AccessSettings:
    """``[access]``: what calling AE titles that are not among the remotes may do."""

    unknown_callers: tuple[str, ...] = _setting(
        tuple(s.value for s in ALL_SERVICES),
        "services a calling AE title not among the [remotes] may use ([]: none, the "
        "archive is closed to strangers)",
        _services,
    )
    check_called_ae: bool = _setting(
        True, "reject an association addressed to another called AE title than ours"
    )


@dataclass(frozen=True)
class TlsSettings:
    """``[tls]``: the certificate files of the TLS ports and of pypacs' TLS client
    (PS3.15 Annex B, BCP 195: TLS 1.2 and 1.3 only)."""

    certificate: str = _setting(
        "", "PEM file of pypacs' certificate (chain)", flag="--tls-certificate"
    )
    private_key: str = _setting("", "PEM file of its private key", flag="--tls-private-key")
    ca: str = _setting(
        "", "PEM file of the certificates peers' certificates are checked against", flag="--tls-ca"
    )
    require_client_certificate: bool = _setting(
        True, "a TLS client without a certificate the [tls] ca trusts is refused"
    )


@dataclass(frozen=True)
class AuthSettings:
    """``[auth]``: who may use the HTTP port."""

    mode: str = _setting(
        "none",
        "none: anyone; local: users and API tokens kept in the index; oidc: bearer JWTs "
        "from [auth.oidc]",
        _one_of("none", "local", "oidc"),
        flag="--auth-mode",
    )
    allow_anonymous: bool = _setting(
        False,
        "serve without authentication on a host other than loopback (warned at every start)",
    )
    session_hours: int = _setting(8, "hours a web page log-in stays valid", _positive_int)
    max_failed_logins: int = _setting(
        10,
        "failed log-ins from one address, or for one user, within 15 minutes; more get 429",
        _positive_int,
    )


@dataclass(frozen=True)
class OidcSettings:
    """``[auth.oidc]``: the OpenID Connect issuer whose access tokens (JWTs) are accepted."""

    issuer: str = _setting("", "the tokens' iss", flag="--oidc-issuer")
    audience: str = _setting("", "the tokens' aud", flag="--oidc-audience")
    jwks_url: str = _setting("", "the issuer's key set (JWKS) address", flag="--oidc-jwks-url")
    jwks_file: str = _setting(
        "", "the issuer's key set as a file, for use offline", flag="--oidc-jwks-file"
    )
    roles_claim: str = _setting(
        "roles", "the claim that holds the user's roles", _non_empty, flag="--oidc-roles-claim"
    )


@dataclass(frozen=True)
class AuditSettings:
    """``[audit]``: where the DICOM audit messages (PS3.15 A.5) go."""

    path: str = _setting(
        "", "file the messages are appended to, one a line (empty: none)", flag="--audit-path"
    )
    syslog: str = _setting(
        "",
        'syslog receiver: "udp://HOST:PORT" (RFC 5426) or "tls://HOST:PORT" (RFC 5425); '
        "empty: none",
        _url_of("udp", "tls"),
        flag="--audit-syslog",
    )
    queue_size: int = _setting(
        10_000,
        "messages waiting for a slow or absent syslog receiver; past it they are dropped "
        "and counted",
        _positive_int,
        flag="--audit-queue-size",
    )


@dataclass(frozen=True)
class WebSettings:
    """``[web]``: DICOMweb's limits, public address and connection bounds."""

    qido_default_limit: int = _setting(
        1000, "QIDO-RS matches answered when the request gives no limit (0: all)", _non_negative_int
    )
    stow_max_bytes: int = _setting(
        2_147_483_648, "largest STOW-RS request body accepted (bytes)", _positive_int
    )
    stow_max_part_bytes: int = _setting(
        1_073_741_824,
        "largest part (one instance) of a STOW-RS request (bytes); a larger one gets 413",
        _positive_int,
    )
    stow_max_parts: int = _setting(
        10_000, "most parts (instances) in one STOW-RS request; one more gets 413", _positive_int
    )
    render_max_frame_bytes: int = _setting(
        67_108_864,
        "largest frame rendered, decoded (Rows x Columns x Samples per Pixel x bytes a "
        "sample); a larger one gets 413",
        _positive_int,
    )
    render_max_bytes_in_flight: int = _setting(
        268_435_456,
        "decoded frame bytes all renders may hold at once; a render past it waits up to "
        "2 seconds, then gets 503",
        _positive_int,
    )
    base_url: str = _setting(
        "",
        "public address absolute URLs start with, e.g. https://pacs.example.org/pacs "
        "(empty: the address each request reached)",
        _base_url,
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (),
        "addresses or CIDR networks of reverse proxies whose X-Forwarded-Proto/-Host/-Prefix "
        "headers are believed (empty: none)",
        _networks,
    )
    header_timeout: int = _setting(
        20,
        "seconds a client has to send a request's line and headers; then 408 and closed",
        _positive_int,
    )
    body_timeout: int = _setting(
        60,
        "seconds a request body may pause between two pieces; then 408 and closed",
        _positive_int,
    )
    keep_alive_timeout: int = _setting(
        5, "seconds an idle connection is kept open for the next request", _positive_int
    )
    max_connections: int = _setting(
        256,
        "HTTP connections open at once by the whole server, shared out evenly among workers "
        "(each at most half the descriptor limit); more get 503",
        _positive_int,
    )
    max_url_bytes: int = _setting(
        16_384,
        "longest request target (path and query) answered; longer ones get 414",
        _positive_int,
    )
    max_header_bytes: int = _setting(
        65_536, "largest header section answered; larger ones get 431", _positive_int
    )
    cors_origins: tuple[str, ...] = _setting(
        (),
        "origins (scheme://host[:port]) allowed to call DICOMweb and the admin API from a "
        "browser, with credentials (empty: none)",
        _origins,
    )


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``."""

    level: str = _setting(
        "INFO", "log level", _one_of("DEBUG", "INFO", "WARNING", "ERROR"), flag="--log-level"
    )
