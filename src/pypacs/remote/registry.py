"""The configured peers (``[remotes.NAME]``): one type, looked up by name or AE title."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pypacs.errors import PypacsError
from pypacs.model.access import ALL_SERVICES, Service


class RemoteError(PypacsError):
    """A peer is unknown, cannot be reached, refused the association or stopped answering."""


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity pypacs talks to: a ``[remotes.NAME]`` table, or one given
    as ``host:port:AE`` on the command line (then named by that text)."""

    name: str
    ae_title: str
    host: str
    port: int
    # What this AE title may ask of pypacs (``allow``), whether an association from it is
    # accepted only from ``host`` (``check_host``), and whether pypacs reaches it over TLS.
    allow: tuple[Service, ...] = ALL_SERVICES
    check_host: bool = False
    tls: bool = False

    def __str__(self) -> str:
        return f"{self.ae_title} at {self.host}:{self.port}"


@dataclass(frozen=True)
class Peers:
    """The configured peers, in configuration order."""

    peers: tuple[Peer, ...] = ()

    @classmethod
    def of(cls, peers: Iterable[Peer]) -> Peers:
        return cls(tuple(peers))

    def __iter__(self) -> Iterator[Peer]:
        return iter(self.peers)

    def __len__(self) -> int:
        return len(self.peers)

    def names(self) -> str:
        """The names, comma-separated, for messages."""
        return ", ".join(p.name for p in self.peers) or "none configured"

    def named(self, name: str) -> Peer | None:
        """The peer called ``name``, if any."""
        return next((p for p in self.peers if p.name == name), None)

    def by_ae_title(self, ae_title: str) -> Peer | None:
        """The first peer with the AE title (PS3.8 9.3.2: trailing spaces are padding)."""
        title = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == title), None)

    def parse(self, text: str) -> Peer:
        """A peer's name, or ``host:port:AE``.

        Raises:
            RemoteError: neither a known name nor host:port:AE.
        """
        named = self.named(text)
        if named is not None:
            return named
        host, sep, title = text.rpartition(":")
        host, sep2, port = host.rpartition(":") if sep else ("", "", "")
        if sep and sep2 and port.isdigit() and 0 < int(port) < 65536 and title and host:
            return Peer(name=text, ae_title=title, host=host, port=int(port))
        raise RemoteError(
            f"unknown remote {text!r}: expected a [remotes] name ({self.names()}) or host:port:AE"
        )
