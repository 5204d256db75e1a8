"""``make demo`` runs ``netkit dns demo``: it must work end to end on a fresh clone."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.peers


def test_demo_answers_fails_over_and_serves_stale() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "netkit.cli", "dns", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "40/40 fresh names resolved with one upstream dead" in out
    assert (
        "expired: served stale, TTL 30" in out
        and "NOERROR" in out.split("expired: served stale")[0].splitlines()[-1]
    )
    assert "netkit_dns_served_stale_total 1.0" in out
    assert out.rstrip().endswith("temp dir removed")
