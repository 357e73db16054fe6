"""Settings: declared once (a typed field per key, with its default, help and check, in one
frozen dataclass per section), read from one TOML file, then frozen.

Every key is optional; command-line flags override the file; a wrong value is an error
that names the file, the key, the value and what was expected. This module builds the
options objects of the lower layers and imports nothing else of ours.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from pypacs.archive.options import ArchiveOptions
from pypacs.audit.options import AuditOptions
from pypacs.errors import ConfigError
from pypacs.model.access import ALL_SERVICES, Service
from pypacs.net.options import NetOptions, TlsOptions
from pypacs.remote.registry import Peer, Peers
from pypacs.web.options import (
    AuthOptions,
    OidcOptions,
    WebOptions,
    parse_base_url,
    parse_networks,
)

Check = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine
_T = TypeVar("_T")


def _port(allow_zero: bool) -> Check:
    low = 0 if allow_zero else 1

    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= 65535
        return None if ok else f"an integer {low}-65535"

    return check


def _ae_title(value: Any) -> str | None:
    # PS3.5 6.2, VR AE: 1 to 16 characters of the default repertoire, no backslash or
    # control characters, not only spaces.
    ok = (
        isinstance(value, str)
        and 0 < len(value) <= 16
        and value.strip() != ""
        and all(32 <= ord(c) < 127 and c != "\\" for c in value)
    )
    return None if ok else "an AE title of 1-16 printable ASCII characters without backslash"


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "a positive integer"


def _non_negative_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "an integer >= 0"


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(choices)

    return check


def _base_url(value: Any) -> str | None:
    if value == "":
        return None
    try:
        parse_base_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _networks(value: Any) -> str | None:
    expected = 'a list of IP addresses or CIDR networks (e.g. ["127.0.0.1", "10.0.0.0/8"])'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return expected
    try:
        parse_networks(value)
    except ValueError as exc:
        return f"{expected}; {exc}"
    return None


def _services(value: Any) -> str | None:
    ok = isinstance(value, list) and all(v in set(Service) for v in value)
    return None if ok else "a list of services among " + ", ".join(ALL_SERVICES)


def _url_of(*schemes: str) -> Check:
    """A ``scheme://host:port`` address with one of ``schemes`` (or "" for none)."""

    def check(value: Any) -> str | None:
        expected = " or ".join(f'"{s}://HOST:PORT"' for s in schemes) + ' or ""'
        if value == "":
            return None
        scheme, sep, rest = value.partition("://") if isinstance(value, str) else ("", "", "")
        host, colon, port = rest.rpartition(":")
        ok = sep and scheme in schemes and colon and host and port.isdigit()
        return None if ok and 0 < int(port) < 65536 else expected

    return check


def _origins(value: Any) -> str | None:
    # An origin is scheme://host[:port] (RFC 6454), no path and no trailing slash.
    ok = isinstance(value, list) and all(
        isinstance(v, str)
        and v.split("://", 1)[0] in ("http", "https")
        and "://" in v
        and "/" not in v.split("://", 1)[1]
        and v.split("://", 1)[1] != ""
        for v in value
    )
    return None if ok else 'a list of origins such as "https://viewer.example"'


def _storage_url(value: Any) -> str | None:
    ok = value == "" or (
        isinstance(value, str)
        and value.startswith("s3://")
        and value[len("s3://") :].split("/", 1)[0] != ""
    )
    return None if ok else '"" (files under [storage] path) or "s3://BUCKET/PREFIX"'


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


# Marks the fields of Settings that hold a section; a nested one (``[auth.oidc]``) names its
# table.
_SECTION = {"section": True}


def _subsection(name: str) -> dict[str, Any]:
    return {"section": True, "name": name}


@dataclass(frozen=True)
class Setting:
    """One key of one section, as the file, the flags and the docs see it."""

    section: str
    key: str
    type: type  # the TOML type: str, int, bool or list
    default: Any
    help: str
    check: Check | None = None
    special_flag: str | None = None

    @property
    def flag(self) -> str:
        """The command-line flag: the key's name, except where that would be ambiguous."""
        return self.special_flag or "--" + self.key.replace("_", "-")

    @property
    def dest(self) -> str:
        return f"{self.section}__{self.key}"


@dataclass(frozen=True)
class Settings:
    """Validated, frozen settings: one typed object per section, the remotes, their source."""

    server: ServerSettings = field(default_factory=ServerSettings, metadata=_SECTION)
    storage: StorageSettings = field(default_factory=StorageSettings, metadata=_SECTION)
    storage_s3: S3Settings = field(default_factory=S3Settings, metadata=_subsection("storage.s3"))
    database: DatabaseSettings = field(default_factory=DatabaseSettings, metadata=_SECTION)
    query: QuerySettings = field(default_factory=QuerySettings, metadata=_SECTION)
    retrieve: RetrieveSettings = field(default_factory=RetrieveSettings, metadata=_SECTION)
    access: AccessSettings = field(default_factory=AccessSettings, metadata=_SECTION)
    tls: TlsSettings = field(default_factory=TlsSettings, metadata=_SECTION)
    web: WebSettings = field(default_factory=WebSettings, metadata=_SECTION)
    auth: AuthSettings = field(default_factory=AuthSettings, metadata=_SECTION)
    auth_oidc: OidcSettings = field(default_factory=OidcSettings, metadata=_subsection("auth.oidc"))
    audit: AuditSettings = field(default_factory=AuditSettings, metadata=_SECTION)
    logging: LoggingSettings = field(default_factory=LoggingSettings, metadata=_SECTION)
    remotes: Peers = field(default_factory=Peers)
    source: str = "defaults"
    # The (section, key) pairs a file or a flag set; the rest are defaults.
    explicit: frozenset[tuple[str, str]] = frozenset()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{Path(self.storage.path) / 'index.sqlite'}"

    def archive_options(self) -> ArchiveOptions:
        return ArchiveOptions(
            database_url=self.database_url,
            blob_root=str(Path(self.storage.path) / "blobs"),
            overwrite_duplicates=self.storage.overwrite_duplicates,
            reserve_path=str(Path(self.storage.path) / "space-reserve"),
            reserve_bytes=self.storage.reserve_bytes,
            max_instance_bytes=self.storage.max_instance_bytes,
            database_pool_size=self.database.pool_size,
            job_lease_seconds=self.retrieve.job_lease_seconds,
            blob_url=self.storage.url,
            s3_endpoint_url=self.storage_s3.endpoint_url,
            s3_region=self.storage_s3.region,
            # Several nodes may share the blobs: an object store, or a folder whose index
            # is on PostgreSQL. One node on SQLite checks before it serves: no grace needed.
            orphan_grace_seconds=(
                self.storage_s3.orphan_grace_seconds
                if self.storage.url or self.database_url.startswith("postgresql")
                else 0
            ),
        )

    def tls_options(self) -> TlsOptions | None:
        """The [tls] files, checked (readable, PEM); None when none is named.

        Raises:
            ConfigError: a file cannot be read or is not PEM of the right kind.
        """
        tls = self.tls
        if not (tls.certificate or tls.private_key or tls.ca):
            return None
        options = TlsOptions(
            certificate=tls.certificate,
            private_key=tls.private_key,
            ca=tls.ca,
            require_client_certificate=tls.require_client_certificate,
        )
        options.check()
        return options

    def audit_options(self) -> AuditOptions:
        return AuditOptions(
            path=self.audit.path,
            syslog=self.audit.syslog,
            queue_size=self.audit.queue_size,
            ae_title=self.server.ae_title,
            tls_ca=self.tls.ca,
            tls_certificate=self.tls.certificate,
            tls_private_key=self.tls.private_key,
        )

    def net_options(self) -> NetOptions:
        return NetOptions(
            ae_title=self.server.ae_title,
            host=self.server.host,
            port=self.server.dicom_port,
            max_associations=self.server.max_associations,
            max_pdu_size=self.server.max_pdu_size,
            artim_timeout=self.server.artim_timeout,
            pdu_read_timeout=self.server.pdu_read_timeout,
            dimse_idle_timeout=self.server.dimse_idle_timeout,
            max_negotiating=self.server.max_negotiating,
            max_negotiating_per_address=self.server.max_negotiating_per_address,
            tls=self.tls_options(),
            tls_port=self.server.dicom_tls_port,
            remotes=self.remotes,
            pn_case_insensitive=self.query.pn_case_insensitive,
            max_results=self.query.max_results,
            unknown_callers=tuple(Service(s) for s in self.access.unknown_callers),
            check_called_ae=self.access.check_called_ae,
            max_move_associations=self.retrieve.max_move_associations,
            accept_unknown_sop_classes=self.storage.accept_unknown_sop_classes,
        )

    def web_options(self) -> WebOptions:
        web = self.web
        return WebOptions(
            host=self.server.host,
            port=self.server.http_port,
            https=self.server.http_tls,
            ae_title=self.server.ae_title,
            pn_case_insensitive=self.query.pn_case_insensitive,
            auth=AuthOptions(
                mode=self.auth.mode,
                session_hours=self.auth.session_hours,
                max_failed_logins=self.auth.max_failed_logins,
            ),
            max_results=self.query.max_results,
            qido_default_limit=web.qido_default_limit,
            stow_max_bytes=web.stow_max_bytes,
            stow_max_part_bytes=web.stow_max_part_bytes,
            stow_max_parts=web.stow_max_parts,
            render_max_frame_bytes=web.render_max_frame_bytes,
            render_max_bytes_in_flight=web.render_max_bytes_in_flight,
            base_url=web.base_url,
            trusted_proxies=web.trusted_proxies,
            header_timeout=web.header_timeout,
            body_timeout=web.body_timeout,
            keep_alive_timeout=web.keep_alive_timeout,
            max_connections=web.max_connections,
            max_url_bytes=web.max_url_bytes,
            max_header_bytes=web.max_header_bytes,
            cors_origins=web.cors_origins,
            oidc=self.oidc_options(),
            viewer_root=str(Path(self.storage.path) / "viewer"),
        )

    def oidc_options(self) -> OidcOptions | None:
        """``[auth.oidc]`` when ``[auth] mode = "oidc"``, else None.

        Raises:
            ConfigError: the issuer, the audience or the key set is missing, or both a key
                URL and a key file are given.
        """
        if self.auth.mode != "oidc":
            return None
        file = "" if self.source == "defaults" else f"{self.source}: "
        oidc, where = self.auth_oidc, f'{file}[auth] mode = "oidc"'
        for key in ("issuer", "audience"):
            if not getattr(oidc, key).strip():
                raise ConfigError(f"{where} needs [auth.oidc] {key} (the tokens' {key[:3]})")
        if bool(oidc.jwks_url) == bool(oidc.jwks_file):
            raise ConfigError(
                f"{where} needs exactly one of [auth.oidc] jwks_url and jwks_file (the "
                "issuer's keys)"
            )
        if oidc.jwks_url and oidc.jwks_url.split("://", 1)[0] not in ("http", "https"):
            raise ConfigError(
                f'{file}[auth.oidc] jwks_url = "{oidc.jwks_url}": expected an '
                "https:// (or http://) URL"
            )
        return OidcOptions(
            issuer=oidc.issuer,
            audience=oidc.audience,
            jwks_url=oidc.jwks_url,
            jwks_file=oidc.jwks_file,
            roles_claim=oidc.roles_claim,
        )


# The TOML type of each field type a section declares.
_TOML_TYPES: dict[Any, type] = {str: str, int: int, bool: bool, tuple[str, ...]: list}


def _sections() -> dict[str, tuple[str, type]]:
    """Each section's name (``auth.oidc`` for a nested one) → the Settings field holding it
    and its dataclass, in the order Settings declares them."""
    hints = get_type_hints(Settings)
    return {
        f.metadata.get("name", f.name): (f.name, hints[f.name])
        for f in fields(Settings)
        if f.metadata.get("section")
    }


def _declared() -> tuple[Setting, ...]:
    table = []
    for section, (_, cls) in _sections().items():
        hints = get_type_hints(cls)
        for f in fields(cls):
            kind = _TOML_TYPES[hints[f.name]]
            default: Any = f.default
            table.append(
                Setting(
                    section,
                    f.name,
                    kind,
                    list(default) if kind is list else default,
                    f.metadata["help"],
                    f.metadata["check"],
                    f.metadata["flag"],
                )
            )
    return tuple(table)


# The flat table the command line, the file reader and the docs use, derived from the sections.
SETTINGS: tuple[Setting, ...] = _declared()
_SECTIONS = _sections()
_BY_NAME = {(s.section, s.key): s for s in SETTINGS}
_REMOTE_KEYS: dict[str, tuple[type, Check]] = {
    "ae_title": (str, _ae_title),
    "host": (str, _non_empty),
    "port": (int, _port(False)),
}
# Optional keys of a remote: what it may ask of pypacs, whether it must call from its host,
# whether pypacs reaches it over TLS (each defaulting to the Peer's own default).
_REMOTE_OPTIONAL: dict[str, tuple[type, Check | None]] = {
    "allow": (list, _services),
    "check_host": (bool, None),
    "tls": (bool, None),
}


def setting(section: str, key: str) -> Setting:
    """The declaration of ``[section] key`` (its check, say, for a value from elsewhere)."""
    return _BY_NAME[(section, key)]


def _typed(setting_type: type, value: Any) -> bool:
    if setting_type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, setting_type)


def _validate(
    where: str, section: str, key: str, value: Any, kind: type, check: Check | None
) -> Any:
    expected = None if _typed(kind, value) else _type_name(kind)
    if expected is None and check is not None:
        expected = check(value)
    if expected is not None:
        raise ConfigError(f"{where}[{section}] {key} = {_show(value)}: expected {expected}")
    return value


def _type_name(kind: type) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
    return names.get(kind, kind.__name__)


def _show(value: Any) -> str:
    return (
        f'"{value}"'
        if isinstance(value, str)
        else repr(value).lower()
        if isinstance(value, bool)
        else repr(value)
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fp:
            return tomllib.load(fp)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _remotes(where: str, table: Any) -> Peers:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}[remotes] must be a table of [remotes.NAME] tables")
    remotes = []
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}[remotes.{name}] must be a table with ae_title, host, port")
        for key in entry:
            if key not in _REMOTE_KEYS and key not in _REMOTE_OPTIONAL:
                raise ConfigError(
                    f"{where}[remotes.{name}] {key}: unknown key; expected one of "
                    + ", ".join([*_REMOTE_KEYS, *_REMOTE_OPTIONAL])
                )
        values: dict[str, Any] = {}
        for key, (kind, check) in _REMOTE_KEYS.items():
            if key not in entry:
                raise ConfigError(f"{where}[remotes.{name}] lacks {key}")
            values[key] = _validate(where, f"remotes.{name}", key, entry[key], kind, check)
        for key, (kind, optional_check) in _REMOTE_OPTIONAL.items():
            if key in entry:
                value = _validate(where, f"remotes.{name}", key, entry[key], kind, optional_check)
                values[key] = tuple(Service(v) for v in value) if key == "allow" else value
        remotes.append(Peer(name=name, **values))
    return Peers.of(remotes)


# Keys that are no more, and what replaced each.
_REPLACED = {
    ("retrieve", "allowed_aes"): "[remotes.NAME] allow and [access] unknown_callers",
}


def _flattened(data: dict[str, Any]) -> dict[str, Any]:
    """The file's tables with each nested section (``[auth.oidc]``) lifted to the top under
    its dotted name."""
    flat = dict(data)
    for name in _SECTIONS:
        parent, dot, child = name.partition(".")
        table = flat.get(parent)
        if dot and isinstance(table, dict) and child in table:
            table = dict(table)
            flat[name] = table.pop(child)
            flat[parent] = table
    return flat


def _from_file(path: Path) -> tuple[dict[tuple[str, str], Any], Peers]:
    data = _flattened(_read_toml(path))
    where = f"{path}: "
    values: dict[tuple[str, str], Any] = {}
    remotes = Peers()
    for section, table in data.items():
        if section == "remotes":
            remotes = _remotes(where, table)
            continue
        known = sorted({s.section for s in SETTINGS} | {"remotes"})
        if section not in known:
            raise ConfigError(
                f"{where}[{section}]: unknown section; expected one of {', '.join(known)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}{section} must be a table ([{section}])")
        for key, value in table.items():
            setting = _BY_NAME.get((section, key))
            if (section, key) in _REPLACED:
                raise ConfigError(
                    f"{where}[{section}] {key} was replaced by {_REPLACED[(section, key)]}; "
                    "see README"
                )
            if setting is None:
                keys = ", ".join(s.key for s in SETTINGS if s.section == section)
                raise ConfigError(f"{where}[{section}] {key}: unknown key; expected one of {keys}")
            values[(section, key)] = _validate(
                where, section, key, value, setting.type, setting.check
            )
    return values, remotes


def parse_flag(setting: Setting, text: str) -> Any:
    """A command-line value, converted and checked like the file's.

    Raises:
        ConfigError: names the flag, the value and what was expected.
    """
    value: Any = text
    if setting.type is int:
        try:
            value = int(text)
        except ValueError:
            value = text
    elif setting.type is bool:
        value = {"true": True, "false": False}.get(text.lower(), text)
    elif setting.type is list:
        value = [part.strip() for part in text.split(",") if part.strip()]
    expected = None if _typed(setting.type, value) else _type_name(setting.type)
    if expected is None and setting.check is not None:
        expected = setting.check(value)
    if expected is not None:
        raise ConfigError(f"{setting.flag} {text!r}: expected {expected}")
    return value


def load(path: Path | None, overrides: Mapping[tuple[str, str], Any] | None = None) -> Settings:
    """Defaults, then the file (if any), then the overrides (already checked flags).

    A relative ``[storage] path`` in the file is taken from the file's folder, so that one
    file names one archive whatever the current folder; a flag's is taken from the current one.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or holds a wrong value.
    """
    values: dict[tuple[str, str], Any] = {}
    remotes = Peers()
    from_file: dict[tuple[str, str], Any] = {}
    if path is not None:
        from_file, remotes = _from_file(path)
        if ("storage", "path") in from_file:
            from_file[("storage", "path")] = str(path.parent / from_file[("storage", "path")])
        for key in _TLS_FILES:  # like [storage] path: taken from the file's folder
            if from_file.get(("tls", key)):
                from_file[("tls", key)] = str(path.parent / from_file[("tls", key)])
        values.update(from_file)
    values.update(overrides or {})
    sections = {
        attribute: cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for (section, key), value in values.items()
                if section == name
            }
        )
        for name, (attribute, cls) in _SECTIONS.items()
    }
    explicit = frozenset(from_file) | frozenset(overrides or {})
    settings = Settings(
        **sections, remotes=remotes, source=str(path) if path else "defaults", explicit=explicit
    )
    _check_tls(settings, f"{path}: " if path else "")
    return settings


_TLS_FILES = ("certificate", "private_key", "ca")


def _check_tls(settings: Settings, where: str) -> None:
    """What TLS needs of [tls]: a certificate and its key wherever TLS is used, a CA where
    client certificates are required (PS3.15 B.9: both ends present one).

    Raises:
        ConfigError: names what asks for TLS and what it lacks.
    """
    server, tls = settings.server, settings.tls
    users = [
        *(["[server] dicom_tls_port"] if server.dicom_tls_port else []),
        *(["[server] http_tls"] if server.http_tls else []),
        *(f"[remotes.{peer.name}] tls" for peer in settings.remotes if peer.tls),
    ]
    if bool(tls.certificate) != bool(tls.private_key) or (users and not tls.certificate):
        lacking = "private_key" if tls.certificate else "certificate"
        raise ConfigError(
            f"{where}[tls] {lacking} is empty: "
            + (f"{', '.join(users)} needs" if users else "[tls] takes")
            + " a certificate and its private key (PEM files)"
        )
    if server.dicom_tls_port and tls.require_client_certificate and not tls.ca:
        raise ConfigError(
            f"{where}[tls] ca is empty: require_client_certificate = true needs the CA "
            "certificates clients' certificates are checked against (or set it to false)"
        )
    if server.dicom_tls_port and server.dicom_tls_port == server.dicom_port:
        raise ConfigError(
            f"{where}[server] dicom_tls_port = {server.dicom_tls_port}: expected another port "
            "than dicom_port"
        )


def defaults() -> Settings:
    """The settings when no file and no flag says otherwise (what tests build options from)."""
    return load(None)
