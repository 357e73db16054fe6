"""DICOM wildcards → SQL LIKE patterns (PS3.4 C.2.2.2.4)."""

from __future__ import annotations

ESCAPE = "\\"


def escape_literal(value: str) -> str:
    """A value whose ``%``, ``_`` and ``\\`` stay literal in a LIKE pattern."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(pattern: str) -> str:
    # PS3.4 C.2.2.2.4: "*" matches any sequence, "?" any single character; the rest is literal.
    return escape_literal(pattern).replace("*", "%").replace("?", "_")
