"""Property: reading any payload either yields a sane prediction or InvalidProviderPayload."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from generation.domain.provider import InvalidProviderPayload, Prediction
from generation.providers.replicate_parsing import parse_prediction

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_KNOWN_STATUS = st.sampled_from(
    ["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
)
_TIMESTAMP = st.one_of(
    _JSON,
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?\Z"),
)
_URLISH = st.one_of(_JSON, st.from_regex(r"\A(https?|ftp|data):/{0,2}[^\s]{0,20}\Z"))
_OPTIONAL_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "output": st.one_of(_URLISH, st.lists(_URLISH, max_size=4)),
        "error": _JSON,
        "data_removed": _JSON,
        "created_at": _TIMESTAMP,
        "started_at": _TIMESTAMP,
        "completed_at": _TIMESTAMP,
        "logs": _JSON,
    },
)
_VALID_ID = st.from_regex(r"\A[a-z0-9]{1,64}\Z")


# No example database: the suite must not write into the working tree.
_SETTINGS = settings(max_examples=200, deadline=None, database=None)
# Whole objects are costlier to draw; fewer examples keep the suite fast.
_OBJECT_SETTINGS = settings(_SETTINGS, max_examples=100)


def _read(payload: bytes) -> Prediction | None:
    try:
        prediction = parse_prediction(payload)
    except InvalidProviderPayload:
        return None
    assert all(url.startswith(("http://", "https://")) for url in prediction.output_urls)
    for moment in (prediction.created_at, prediction.started_at, prediction.completed_at):
        assert moment is None or moment.utcoffset() is not None
    assert isinstance(prediction.has_error, bool)
    assert isinstance(prediction.data_removed, bool)
    return prediction


@_SETTINGS
@given(st.binary(max_size=512))
def test_arbitrary_bytes(payload: bytes) -> None:
    _read(payload)


@_SETTINGS
@given(_JSON)
def test_arbitrary_json(document: Any) -> None:
    _read(json.dumps(document).encode())


@_OBJECT_SETTINGS
@given(_VALID_ID, _KNOWN_STATUS, _OPTIONAL_FIELDS)
def test_objects_with_valid_id_and_status_always_parse(
    prediction_id: str, status: str, fields: dict[str, Any]
) -> None:
    payload = json.dumps({"id": prediction_id, "status": status, **fields}).encode()
    prediction = _read(payload)
    assert prediction is not None
    assert prediction.id == prediction_id
    assert prediction.status.value == status


@_OBJECT_SETTINGS
@given(st.one_of(_VALID_ID, _JSON), st.one_of(_KNOWN_STATUS, _JSON), _OPTIONAL_FIELDS)
def test_objects_with_any_id_and_status(
    identifier: Any, status: Any, fields: dict[str, Any]
) -> None:
    _read(json.dumps({"id": identifier, "status": status, **fields}).encode())
