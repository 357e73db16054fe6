"""Logging set-up: one format, to standard error, with secrets masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

# Text that must never be shown (a database URL with its password) → what to show instead.
_redactions: dict[str, str] = {}


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by its masked form."""
    for secret, masked in _redactions.items():
        text = text.replace(secret, masked)
    return text


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # The whole line, traceback included: a secret may come from any library's message.
        return redact(super().format(record))


def setup(level: str = "INFO", redactions: Mapping[str, str] | None = None) -> None:
    """Log to standard error at ``level``; ``redactions`` (secret → masked) apply to every
    record and to :func:`redact`."""
    _redactions.clear()
    # Longest first, so that a secret containing another is replaced whole.
    for secret in sorted(redactions or {}, key=len, reverse=True):
        if secret:
            _redactions[secret] = (redactions or {})[secret]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
