"""A signed-in user of the public API (through Envoy), synchronous."""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import httpx
from PIL import Image

from launcher.devtoken import make_dev_token
from tests.faults.system import System


def jpeg_bytes(color: tuple[int, int, int] = (180, 120, 90)) -> bytes:
    """A small real JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class ApiUser:
    """One user with their own token; remembers the jobs they submitted."""

    def __init__(self, system: System) -> None:
        self.id = uuid.uuid4()
        self.system = system
        token = make_dev_token(system.stack.config.auth_jwt_secret, user_id=str(self.id))
        self.headers = {"Authorization": f"Bearer {token}"}
        self.job_ids: list[str] = []

    def submit(self, *, image: bool = True, key: str | None = None) -> httpx.Response:
        """A redesign (uploads an input) or an imagine (no upload)."""
        headers = dict(self.headers)
        if key:
            headers["Idempotency-Key"] = key
        url = f"{self.system.api}/generations"
        if image:
            response = self.system.http.post(
                url,
                data={"mode": "redesign", "style": "japandi"},
                files={"input1": ("room.jpg", jpeg_bytes(), "image/jpeg")},
                headers=headers,
            )
        else:
            body = {"mode": "imagine", "prompt": "A sunroom with plants"}
            response = self.system.http.post(url, json=body, headers=headers)
        if response.status_code == 202:
            self.job_ids.append(response.json()["id"])
        return response

    def submit_ok(self, *, image: bool = False) -> dict[str, Any]:
        response = self.submit(image=image)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, job_id: str) -> httpx.Response:
        return self.system.http.get(f"{self.system.api}/generations/{job_id}", headers=self.headers)

    def cancel(self, job_id: str) -> httpx.Response:
        return self.system.http.patch(
            f"{self.system.api}/generations/{job_id}",
            json={"action": "cancel"},
            headers=self.headers,
        )

    def usage(self) -> dict[str, Any]:
        response = self.system.http.get(f"{self.system.api}/usage", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, job_id: str, statuses: set[str], timeout: float = 20.0) -> dict[str, Any]:
        """Poll GET (each GET may refresh a stale job) until one of ``statuses``."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = self.get(job_id)
            if response.status_code == 200:
                body = response.json()
                if body["status"] in statuses:
                    return body
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not {statuses} within {timeout} s; last {body}")


def assert_error(response: httpx.Response, status: set[int], code: str) -> None:
    """A normalized JSON error body with ``code`` and one of ``status``."""
    assert response.status_code in status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
