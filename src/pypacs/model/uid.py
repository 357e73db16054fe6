"""One rule for UIDs at every door (PS3.5 9.1, 6.2 VR UI).

PS3.5 9.1 allows dot-separated numbers without leading zeros, at most 64 characters. Real
devices break it (``999.999.2.19940822.083000``: leading zeros; letters; doubled dots),
and an archive must keep and serve what they send. So pypacs is liberal in what it
accepts and strict in what it makes: a UID *accepted* is 1-64 characters that never need
escaping in a URL path segment (RFC 3986 2.3 unreserved: letters, digits, ``.-_~``), the
same rule for C-STORE, STOW-RS, C-FIND, C-GET, C-MOVE, WADO and DELETE; a UID pypacs
*generates* conforms to 9.1.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64  # PS3.5 Table 6.2-1, VR UI

_ACCEPTED = re.compile(r"[0-9A-Za-z._~-]{1,64}")
_CONFORMING = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_acceptable_uid(value: str) -> bool:
    """A UID pypacs stores, finds, retrieves and deletes, conforming or not."""
    return _ACCEPTED.fullmatch(value) is not None


def is_conforming_uid(value: str) -> bool:
    """PS3.5 9.1 to the letter: the rule for UIDs pypacs generates."""
    return len(value) <= MAX_LENGTH and _CONFORMING.fullmatch(value) is not None
