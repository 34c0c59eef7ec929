"""The minimum upload rate: a body slower than N bytes/s over a sliding window is cut off.

The rule: at any moment ``t`` at least one window after the body started, the bytes
received in ``(t - window, t]`` must be at least ``min_bytes_per_second * window``.
The first window is the grace period (a connection may start slowly). Because
bytes only ever add up, the rule can be turned into a deadline: given what has
arrived, the moment the rule would break if nothing more came. The reader waits
for the next chunk no longer than that, so a client that stops sending entirely
is caught as surely as one that trickles.
"""

from __future__ import annotations

from collections import deque

# Arrivals closer together than window / _RESOLUTION share one sample: the history
# stays small however tiny the chunks are (at most a few hundred entries).
_RESOLUTION = 100


class UploadPace:
    """Tracks one body's arrivals and says when it becomes too slow."""

    def __init__(self, min_bytes_per_second: int, window_seconds: float, started: float) -> None:
        self._window = window_seconds
        self._needed = min_bytes_per_second * window_seconds
        self._merge = window_seconds / _RESOLUTION
        self._total = 0
        # (time, bytes received up to then), oldest first; starts with nothing at the start.
        self._samples: deque[tuple[float, int]] = deque([(started, 0)])

    def received(self, size: int, now: float) -> None:
        """Record ``size`` bytes that arrived at ``now``."""
        self._total += size
        last_time, _ = self._samples[-1]
        if now - last_time < self._merge and len(self._samples) > 1:
            # Credits the bytes slightly early (by under window / _RESOLUTION): lenient.
            self._samples[-1] = (last_time, self._total)
        else:
            self._samples.append((now, self._total))
        # A sample this far behind can never again be the start of a failing window.
        while self._samples[0][1] <= self._total - self._needed:
            self._samples.popleft()

    def deadline(self) -> float:
        """The moment the rule breaks unless more bytes arrive before it."""
        return self._samples[0][0] + self._window
