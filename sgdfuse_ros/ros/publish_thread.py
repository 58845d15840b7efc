"""The node's publishing thread: fused frames leave the node from a thread of their own.

Building and sending a frame's messages (a 1920x1080 RGB image is 6 MB to copy and serialize,
plus its camera_info, masks and JPEG copies) then overlaps the fusion of the next pair instead
of delaying it. Between the two threads is a drop-oldest slot of one, as between the cameras
and the fusion: a frame the publisher could not take before the next one was fused is dropped
and counted (``replaced``), never queued.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from sgdfuse_ros.core.slots import LatestSlot


class PublishThread:
    """Calls ``publish(item)`` in its own thread for the newest item :meth:`put`;
    ``on_error(exc)`` for an exception (the thread goes on)."""

    def __init__(self, publish: Callable[[Any], None], on_error: Callable[[Exception], None],
                 name: str = 'sgdfuse-publish'):
        self._publish, self._on_error, self._name = publish, on_error, name
        self._slot = LatestSlot()
        self._thread: threading.Thread | None = None
        self.replaced_before = 0  # frames dropped by the slots of earlier starts

    def start(self) -> None:
        self.replaced_before += self._slot.replaced
        self._slot = LatestSlot()
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    @property
    def replaced(self) -> int:
        """Fused frames replaced by a newer one before they were published."""
        return self.replaced_before + self._slot.replaced

    def put(self, item: Any) -> None:
        self._slot.put(item)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish nothing more; wait for the frame in hand."""
        self._slot.close()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        slot = self._slot
        while True:
            item = slot.get(timeout=0.2)
            if item is None:
                if slot.closed:
                    return
                continue
            try:
                self._publish(item)
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                self._on_error(exc)
