"""Malformed multipart bodies and wrong content types: a clear 4xx, nothing stored.

Bodies are written byte by byte (no client library tidies them up) and sent to
the real edge over HTTP.
"""

from __future__ import annotations

import pytest

from tests.badinput.checks import assert_error, assert_nothing_left
from tests.e2e.harness import Stack, User, jpeg_bytes

BOUNDARY = "b0undary-9f1c"
JPEG = jpeg_bytes()


def field(name: str, value: bytes, boundary: str = BOUNDARY) -> bytes:
    """One text part."""
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
    )


def file_part(name: str, data: bytes, filename: str = "room.jpg") -> bytes:
    """One file part."""
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
    )


def closing(boundary: str = BOUNDARY) -> bytes:
    return f"--{boundary}--\r\n".encode()


VALID = field("mode", b"redesign") + file_part("input1", JPEG) + closing()
NESTED = (
    field("mode", b"redesign")
    + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input1"\r\n'.encode()
    + b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n"
    + b'--inner\r\nContent-Disposition: file; filename="room.jpg"\r\n'
    + b"Content-Type: image/jpeg\r\n\r\n"
    + JPEG
    + b"\r\n--inner--\r\n\r\n"
    + closing()
)

MALFORMED: dict[str, tuple[str, bytes]] = {
    "boundary_differs_from_body": (f"multipart/form-data; boundary={BOUNDARY}x", VALID),
    "no_boundary_parameter": ("multipart/form-data", VALID),
    "empty_boundary": ('multipart/form-data; boundary=""', VALID),
    "overlong_boundary": ("multipart/form-data; boundary=" + "b" * 500, VALID),
    "empty_body": (f"multipart/form-data; boundary={BOUNDARY}", b""),
    "truncated_in_file": (f"multipart/form-data; boundary={BOUNDARY}", VALID[: len(VALID) // 2]),
    "no_closing_boundary": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign") + file_part("input1", JPEG),
    ),
    "headers_without_body": (
        f"multipart/form-data; boundary={BOUNDARY}",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input1"\r\n'.encode(),
    ),
    "part_without_name": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign")
        + f'--{BOUNDARY}\r\nContent-Disposition: form-data; filename="a.jpg"\r\n\r\n'.encode()
        + JPEG
        + b"\r\n"
        + closing(),
    ),
    "part_without_disposition": (
        f"multipart/form-data; boundary={BOUNDARY}",
        f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nredesign\r\n".encode() + closing(),
    ),
    "attachment_disposition": (
        f"multipart/form-data; boundary={BOUNDARY}",
        f'--{BOUNDARY}\r\nContent-Disposition: attachment; name="mode"\r\n\r\nredesign\r\n'.encode()
        + closing(),
    ),
    # A file field sent as text (e.g. a path typed into a form): not an image.
    "file_field_without_filename": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign") + field("input1", b"/home/me/room.jpg") + closing(),
    ),
    "nested_multipart": (f"multipart/form-data; boundary={BOUNDARY}", NESTED),
    "garbage_between_parts": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign") + b"\x00\xff garbage\r\n" + file_part("input1", JPEG),
    ),
    "unknown_field": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign")
        + field("admin", b"true")
        + file_part("input1", JPEG)
        + closing(),
    ),
    "field_sent_twice": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign")
        + field("mode", b"imagine")
        + file_part("input1", JPEG)
        + closing(),
    ),
    "input2_without_input1": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"compose") + file_part("input2", JPEG) + closing(),
    ),
    "empty_file": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign") + file_part("input1", b"") + closing(),
    ),
    "field_not_utf8": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign") + field("prompt", b"\xff\xfe\xfa") + file_part("input1", JPEG),
    ),
    "overlong_text_field": (
        f"multipart/form-data; boundary={BOUNDARY}",
        field("mode", b"redesign" * 100) + file_part("input1", JPEG) + closing(),
    ),
    "json_declared_multipart_sent": ("application/json", VALID),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_multipart_is_refused(stack: Stack, user: User, case: str) -> None:
    content_type, body = MALFORMED[case]
    response = await user.client.post(
        f"{stack.api}/generations",
        content=body,
        headers={**user.headers, "Content-Type": content_type},
    )
    assert_error(response, {400, 413, 415}, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize("length", [4100, 20_000, 200_000])
async def test_a_file_name_too_long_is_named_as_the_problem(
    stack: Stack, user: User, length: int
) -> None:
    body = field("mode", b"redesign") + file_part("input1", JPEG, "r" * length + ".jpg") + closing()
    response = await user.client.post(
        f"{stack.api}/generations",
        content=body,
        headers={**user.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    message = response.json()["error"]["message"]
    if length < 64 * 1024:
        assert "shorten the file name" in message
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "image/jpeg",
        "multipart/mixed; boundary=" + BOUNDARY,
        "application/json-patch+json",
        "",
    ],
)
async def test_wrong_content_types_are_415(stack: Stack, user: User, content_type: str) -> None:
    body = {
        "text/plain": b"mode=imagine prompt=a sunny room",
        "application/xml": b"<generation><mode>imagine</mode></generation>",
        "application/x-www-form-urlencoded": b"mode=imagine&prompt=a+sunny+bright+room",
    }.get(content_type.split(";")[0], VALID)
    headers = {**user.headers, "Content-Type": content_type}
    response = await user.client.post(f"{stack.api}/generations", content=body, headers=headers)
    assert_error(response, 415, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


async def test_cancel_with_wrong_content_type_is_415(stack: Stack, user: User) -> None:
    response = await user.client.patch(
        f"{stack.api}/generations/00000000-0000-4000-8000-000000000000",
        content=b"action=cancel",
        headers={**user.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 415, "VALIDATION_ERROR")


LONG_NAME = field("mode", b"redesign") + file_part("input1", JPEG, "r" * 3900 + ".jpg") + closing()


@pytest.mark.parametrize("body", [VALID, LONG_NAME], ids=["valid", "long_file_name_under_limit"])
async def test_a_well_formed_body_still_works(stack: Stack, user: User, body: bytes) -> None:
    """The byte-level builders above produce bodies the edge accepts when intact."""
    response = await user.client.post(
        f"{stack.api}/generations",
        content=body,
        headers={**user.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 202, response.text
    await user.wait_for(response.json()["id"], {"succeeded"})
