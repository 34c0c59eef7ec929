"""Names both ends of an internal gRPC call must agree on (beyond the protos)."""

from __future__ import annotations

# WatchJobs' initial metadata: the longest (seconds) a follower of a healthy change
# feed waits between two caught_up marks. A follower that hears nothing for longer
# may take the stream for dead; without it, the server does not send heartbeats.
FEED_MARKS_WITHIN = "x-feed-marks-within"
