"""How many submissions one generation instance takes at once.

A submission spools its inputs on this instance's disk (the upload, then its cleaned
copy: up to four files of the upload limit) and waits its turn at the decode workers.
Each edge replica caps what it forwards, but the edges spread their calls over every
instance and scale apart from them, so without a cap of its own one instance could be
sent the sum: past its disk budget (an emptyDir's size limit in Kubernetes) the pod is
evicted with every job it holds. A submission beyond the cap waits a moment for a
slot, then is refused with ``TOO_MANY_REQUESTS`` (the edge's 429 with Retry-After)
before any of its inputs' bytes are stored, and answered like every refusal (the
sender told to stop, its stream drained: see api/intake.py). A submission that
declares no input (an idea in words, a refinement of an earlier render) spools nothing
and takes no slot; a slot (with the spools) is given back once the inputs are stored,
before the provider call, however long that takes.
"""

from __future__ import annotations

import math

from kit.slots import Slots


def submission_slots(limit: int, wait_seconds: float) -> Slots:
    """This instance's submission slots; a refusal's Retry-After is the wait, rounded up."""
    return Slots("generation.submissions", limit, wait_seconds, max(1, math.ceil(wait_seconds)))
