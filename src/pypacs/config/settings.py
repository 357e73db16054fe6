"""Settings: every section in one frozen object, the flat table of keys derived from it, and
the options objects of the lower layers built from it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from pypacs.archive.options import ArchiveOptions
from pypacs.audit.options import AuditOptions
from pypacs.config.checks import Check, _ae_title, _non_empty, _port, _services
from pypacs.config.sections import (
    AccessSettings,
    AuditSettings,
    AuthSettings,
    DatabaseSettings,
    LoggingSettings,
    OidcSettings,
    QuerySettings,
    RetrieveSettings,
    S3Settings,
    ServerSettings,
    StorageSettings,
    TlsSettings,
    WebSettings,
)
from pypacs.errors import ConfigError
from pypacs.model.access import Service
from pypacs.net.options import NetOptions, TlsOptions
from pypacs.remote.registry import Peers
from pypacs.web.options import AuthOptions, OidcOptions, WebOptions

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
