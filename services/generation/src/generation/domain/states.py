"""The one vocabulary of a job's states: its status, its charge and its refund.

StrEnums, so a value is its database and log spelling; models, constraints,
repositories, metrics and mappers all name states through these (never literals).
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# A job in one of these holds its owner's one in-flight slot.
INFLIGHT = (JobStatus.STARTING, JobStatus.PROCESSING)
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
# Terminal without output: the generation is given back when it was charged.
ENDED_WITHOUT_OUTPUT = (JobStatus.FAILED, JobStatus.CANCELED)


class ChargeState(enum.StrEnum):
    """Whether the job's generation was debited at the usage service."""

    NONE = "none"
    CHARGED = "charged"
    # Not charged, and never asked for again: refused by a plan change after the run
    # happened, or found never debited once the job ended without output (its debit's
    # answer was lost; a debit that lands after all is recorded and given back).
    WAIVED = "waived"


class RefundState(enum.StrEnum):
    """Whether the job's generation was given back at the usage service."""

    NONE = "none"
    PENDING = "pending"
    DONE = "done"


def sql_list(states: tuple[enum.StrEnum, ...]) -> str:
    """``('a', 'b')`` for a CHECK constraint or a partial index's predicate."""
    return "(" + ", ".join(f"'{state.value}'" for state in states) + ")"
