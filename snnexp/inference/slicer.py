"""Event packets -> complete event frames, one per ``window_us``, as a stream arrives.

The same window grid and counting as the data pipeline (:mod:`snnexp.data.frames`): window
``i`` covers ``[origin + i * window, origin + (i + 1) * window)`` and becomes uint16 counts
``[2, H, W]`` (OFF, ON), downsampled by summing. A window is complete once an event at or
after its end has arrived (or the stream ends past it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from snnexp.data.frames import FRAME_DTYPE, WindowGrid, accumulate, frame_shape

_UNBOUNDED = 1 << 40  # windows of a stream grid: as many as a stream can have
MAX_ROWS = 64  # frames counted at once (bounds memory across gaps in the stream)


class WindowSlicer:
    """Cut a time-ordered event stream into frames of the grid starting at ``origin_us``."""

    def __init__(self, origin_us: int, window_us: int, width: int, height: int,
                 downsample: int = 1) -> None:
        self.grid = WindowGrid(int(origin_us), int(window_us), _UNBOUNDED)
        self.downsample = int(downsample)
        self.shape = frame_shape(width, height, downsample)
        self.next = 0  # index of the first window not yet emitted
        self._pending = np.zeros((1, *self.shape), FRAME_DTYPE)  # counts of window ``next``

    def end_of(self, index: int) -> int:
        """End time (us) of window ``index``."""
        return self.grid.origin_us + (int(index) + 1) * self.grid.window_us

    def add(self, events: object, until_us: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Count a packet; yield ``(index, frame)`` of every window it completes.

        ``until_us`` caps the completed windows at those ending by then (e.g. the last IMU
        sample of a file, to keep the data pipeline's windows).
        """
        t = np.asarray(events.t)
        if len(t) == 0:
            return
        last = int(self.grid.window_index(t[-1:])[0])  # sorted stream: the packet's last window
        complete = last - 1
        if until_us is not None:
            complete = min(complete, (int(until_us) - self.grid.origin_us)
                           // self.grid.window_us - 1)
        lo = self.next
        while lo <= max(last, lo):
            rows = min(MAX_ROWS, max(last, lo) - lo + 1)
            buf = np.zeros((rows, *self.shape), FRAME_DTYPE)
            buf[0] += self._pending[0]
            accumulate(buf, events, self.grid, downsample=self.downsample, first_window=lo)
            for r in range(rows):
                if lo + r > complete:
                    self._pending = buf[r:r + 1].copy()
                    self.next = lo + r
                    return
                yield lo + r, buf[r]
            lo += rows
            self.next = lo
            self._pending = np.zeros((1, *self.shape), FRAME_DTYPE)
            if lo > last:
                return

    def finish(self, last_us: int) -> Iterator[tuple[int, np.ndarray]]:
        """The stream ended with its last timestamp ``last_us``: the pending window, if that
        timestamp reached its end."""
        if self.end_of(self.next) <= int(last_us):
            frame = self._pending[0].copy()
            self._pending[0] = 0
            self.next += 1
            yield self.next - 1, frame
