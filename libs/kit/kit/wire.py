"""Names both ends of an internal gRPC call must agree on (beyond the protos)."""

from __future__ import annotations

# WatchJobs' initial metadata: the longest (seconds) a follower of a healthy change
# feed waits between two caught_up marks. A follower that hears nothing for longer
# may take the stream for dead; without it, the server does not send heartbeats.
FEED_MARKS_WITHIN = "x-feed-marks-within"

# How long a follower keeps one WatchJobs stream before renewing it (seconds): bounded
# like every call, and a new stream lands on whichever replica is there now. Servers let
# a stream this long finish on a connection they have retired (its age's grace), so it
# ends on its own deadline, not cut.
FEED_STREAM_SECONDS = 600.0
