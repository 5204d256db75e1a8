"""Fixtures shared by the DNS tests: a real NSD serving test zones on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labs.dnspeers import NsdServer, Record, Zone, generate_zone
from labs.runid import RunDir

BIG_TXT = "x" * 200


def lab_zone() -> Zone:
    """example.test: h0..h199 (A, every 4th AAAA, TTL 300), plus the records the tests need."""
    zone = generate_zone("example.test", 200, seed=7, ttl=300, negative_ttl=60)
    extra = [
        Record("alias", "CNAME", "h1"),
        Record("ttl10", "A", "198.18.9.10", ttl=10),
        Record("ttl2", "A", "198.18.9.2", ttl=2),
        *[Record(f"short{i}", "A", f"198.18.8.{i + 1}", ttl=1) for i in range(20)],
        *[Record("big", "TXT", f'"{i:02d}{BIG_TXT}"') for i in range(12)],
        *[Record("many", "A", f"198.18.7.{i + 1}") for i in range(60)],
    ]
    zone.records.extend(extra)
    return zone


@pytest.fixture(scope="session")
def lab_zone_data() -> Zone:
    return lab_zone()


@pytest.fixture
def run_dir() -> Iterator[RunDir]:
    with RunDir() as rd:
        yield rd


@pytest.fixture
def nsd(run_dir: RunDir, lab_zone_data: Zone) -> Iterator[NsdServer]:
    with NsdServer([lab_zone_data], workdir=run_dir.path) as server:
        yield server


@pytest.fixture
def nsd2(run_dir: RunDir, lab_zone_data: Zone) -> Iterator[NsdServer]:
    with NsdServer([lab_zone_data], workdir=run_dir.path) as server:
        yield server


def hp(server: NsdServer) -> str:
    host, port = server.address
    return f"{host}:{port}"
