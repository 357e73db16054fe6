"""Counts in the commands' output, with their nouns agreeing."""

from __future__ import annotations


def counted(number: int, singular: str, plural: str = "") -> str:
    """``1 match``, ``2 matches``, ``0 matches``: a count with its noun agreeing."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"
