"""An id in a usage request is one spelling of one UUID (kit.ids).

uuid.UUID read any Unicode decimal digit as its ASCII digit, so an owner id written in
Arabic-Indic digits was charged to the ASCII owner of the same digits.
"""

from __future__ import annotations

import grpc
import pytest

from interior.usage.v1 import usage_pb2

CANONICAL = "11111111-2222-3333-4444-555555555555"
ALIAS = CANONICAL.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


@pytest.mark.parametrize("raw", [ALIAS, "+" + "0" * 31, f" {CANONICAL} "])
async def test_an_owner_id_in_another_spelling_is_refused(usage, raw: str) -> None:
    error = await usage.error_of(usage.quota(raw))
    assert (error.code, error.details.get("field")) == ("VALIDATION_ERROR", "owner_id")


async def test_a_debit_for_an_alias_charges_nobody(usage, new_id) -> None:
    before = (await usage.quota(CANONICAL)).used
    request = usage_pb2.DebitRequest(
        owner_id=ALIAS, job_id=new_id(), idempotency_key=f"alias:{new_id()}"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usage.stub.Debit(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await usage.quota(CANONICAL)).used == before
