"""Reading Prometheus text the way a scraper does, and waiting for counters to move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Scrape:
    """One exposition, parsed: every sample by name and labels."""

    samples: dict[SampleKey, float]
    families: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[SampleKey, float] = {}
        families: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(samples, families)

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when it is not exported (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample_name, sample_labels), value in self.samples.items()
            if sample_name == name and wanted <= sample_labels
        )

    def all_samples(self) -> list[Sample]:
        return [Sample(name, dict(labels), value) for (name, labels), value in self.samples.items()]


def local_scrape() -> Scrape:
    """This process's default registry (every in-process service writes to it)."""
    return Scrape.parse(generate_latest(REGISTRY).decode())


async def http_scrape(client: httpx.AsyncClient, base_url: str) -> Scrape:
    """``GET {base_url}/metrics`` and parse it."""
    response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


async def eventually(
    scrape: Callable[[], Awaitable[Scrape]], done: Callable[[Scrape], bool], timeout: float = 5.0
) -> Scrape:
    """Scrape until ``done`` holds: request metrics are recorded after the answer is sent."""
    deadline = time.monotonic() + timeout
    while True:
        current = await scrape()
        if done(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.02)


async def local_scrape_until(done: Callable[[Scrape], bool], timeout: float = 5.0) -> Scrape:
    """:func:`local_scrape` once ``done`` holds (an aborted RPC's client may see the
    status before the server's interceptor has recorded it)."""

    async def scrape() -> Scrape:
        return local_scrape()

    return await eventually(scrape, done, timeout)
