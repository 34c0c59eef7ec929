"""The usage service: plans, monthly quota and the append-only usage ledger.

It owns the ``profiles`` table (a user's plan via ``price_id``) and the
``usage_ledger`` (one debit per generation job, at most one credit - a refund -
per job). Other services reach it only through ``interior.usage.v1``.
"""
