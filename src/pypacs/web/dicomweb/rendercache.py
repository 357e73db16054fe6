"""Thumbnails once made, kept in memory: a least-recently-used cache bounded in bytes.

Entries are keyed by the stored blob (a new copy of an instance has a new blob key, so a
replaced instance is never served from an old entry; a deleted one is not found before the
cache is asked), the frame and the rendering asked for. Each process has its own cache;
nothing depends on it but speed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

MAX_BYTES = 16 * 1024 * 1024  # thumbnails are a few kilobytes: thousands fit
MAX_ENTRY = 1024 * 1024  # a larger image (a thumbnail with a 4096 viewport) is not kept


class RenderCache:
    """Encoded images by key, the least recently used dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            image = self._entries.get(key)
            if image is not None:
                self._entries.move_to_end(key)
            return image

    def put(self, key: Hashable, image: bytes) -> None:
        if len(image) > self.max_entry:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = image
            self._size += len(image)
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size
