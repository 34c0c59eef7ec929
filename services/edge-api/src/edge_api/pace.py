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
        # When the newest sample's first arrival came (it takes arrivals until _merge on).
        self._newest_since = started

    def received(self, size: int, now: float) -> None:
        """Record ``size`` bytes that arrived at ``now``."""
        self._total += size
        if now - self._newest_since < self._merge and len(self._samples) > 1:
            # Dated by its latest arrival: the sample's earlier bytes are credited a little
            # late (by under window / _RESOLUTION), so they leave the window late, never
            # early: lenient. (Dated by its first, they left early: a client that kept
            # to the rule could be cut off up to that much before it broke it.)
            self._samples[-1] = (now, self._total)
        else:
            self._samples.append((now, self._total))
            self._newest_since = now
        # A sample this far behind can never again be the start of a failing window.
        while self._samples[0][1] <= self._total - self._needed:
            self._samples.popleft()

    def deadline(self) -> float:
        """The moment the rule breaks unless more bytes arrive before it."""
        return self._samples[0][0] + self._window
