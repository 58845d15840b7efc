"""A drop-oldest queue of size one, shared by the node's fusion worker and the mask worker.

A slow consumer then skips stale items instead of building a backlog (camera_calibration's
``BufferQueue`` is the model).
"""

from __future__ import annotations

import threading
from typing import Any


class LatestSlot:
    """A drop-oldest queue of size one: :meth:`put` replaces an item not yet taken.

    ``replaced`` counts the items that were overwritten before a consumer took them.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.replaced = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; returns True when it replaced one that was never taken."""
        with self._cond:
            replaced = self._full
            if replaced:
                self.replaced += 1
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> Any:
        """The newest item, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()
