"""Who may do what: the DICOM services a peer may ask for and the roles of HTTP users.

Pure vocabulary; the rules that use it live in the front doors (net/, web/).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Service(StrEnum):
    """A DIMSE service a calling AE title may be allowed (``allow``, ``unknown_callers``)."""

    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    GET = "get"
    MOVE = "move"


ALL_SERVICES: tuple[Service, ...] = tuple(Service)


class Role(StrEnum):
    """An HTTP user's role; each holds every right of the ones before it."""

    READER = "reader"  # QIDO-RS, WADO-RS/URI, the web page, statistics
    WRITER = "writer"  # reader + STOW-RS
    ADMIN = "admin"  # writer + DELETE, sending to remotes, jobs, users and tokens

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """This role holds the rights of ``needed``."""
        return self.rank >= needed.rank


_RANKS = {Role.READER: 0, Role.WRITER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who an HTTP request acts for, once authenticated."""

    name: str  # the user's name (local users and their tokens), or the OIDC token's subject
    role: Role
    method: str  # how it was proven: "basic", "token", "session", "oidc" or "anonymous"
