"""The usage service's Prometheus metrics, recorded where the ledger logs its decisions.

Labels take values from fixed sets (outcomes, entry kinds, plan names from the
runtime config); owner and job ids never become labels. The outcome children
are created at import so they are exported as 0 before they first move.
"""

from __future__ import annotations

from prometheus_client import Counter

DEBIT_OUTCOMES = ("recorded", "replayed", "refused", "voided")
CREDIT_OUTCOMES = ("recorded", "replayed", "not_debited")
ENTRY_KINDS = ("debit", "credit")

DEBITS = Counter(
    "usage_ledger_debits_total",
    "Debit requests: recorded, replayed (an earlier debit of the job), refused (no quota"
    " left), voided (the job was settled without a charge).",
    ["outcome"],
)
CREDITS = Counter(
    "usage_ledger_credits_total",
    "Credit (refund) requests: recorded, replayed, not_debited (nothing to give back).",
    ["outcome"],
)
KEY_CONFLICTS = Counter(
    "usage_ledger_key_conflicts_total",
    "Ledger requests refused because their key or job belongs to another entry, by kind.",
    ["kind"],
)
PLAN_CHANGES = Counter(
    "usage_plan_changes_total",
    "Plan changes (SetPlan), by the plan the user is on afterwards.",
    ["plan"],
)

for _outcome in DEBIT_OUTCOMES:
    DEBITS.labels(outcome=_outcome)
for _outcome in CREDIT_OUTCOMES:
    CREDITS.labels(outcome=_outcome)
for _kind in ENTRY_KINDS:
    KEY_CONFLICTS.labels(kind=_kind)


def ledger_answer(kind: str, *, replayed: bool) -> None:
    """A debit or credit was recorded or found already recorded."""
    counter = DEBITS if kind == "debit" else CREDITS
    counter.labels(outcome="replayed" if replayed else "recorded").inc()


def debit_refused() -> None:
    """A debit was refused: the user has nothing left this period."""
    DEBITS.labels(outcome="refused").inc()


def debit_voided() -> None:
    """A debit of a job settled without a charge was refused (nothing written)."""
    DEBITS.labels(outcome="voided").inc()


def credit_not_debited() -> None:
    """A credit was asked for a job the user was never debited for."""
    CREDITS.labels(outcome="not_debited").inc()


def key_conflict(kind: str) -> None:
    """A key or job already used for a different ledger entry."""
    KEY_CONFLICTS.labels(kind=kind).inc()


def plan_changed(plan: str) -> None:
    """A user was put on ``plan`` (a plan name from the runtime config)."""
    PLAN_CHANGES.labels(plan=plan).inc()
