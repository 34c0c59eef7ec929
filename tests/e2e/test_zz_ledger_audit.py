"""Runs after the other end-to-end suites: the books must balance."""

from __future__ import annotations

from tests.e2e.harness import Stack


async def test_usage_audit_finds_no_discrepancy(stack: Stack) -> None:
    discrepancies = await stack.audit()
    assert [(d.kind, d.job_id, d.detail) for d in discrepancies] == []
