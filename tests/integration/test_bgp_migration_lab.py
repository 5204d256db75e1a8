"""Live migration with real speakers: 12 nodes (BIRD and FRR alternating) in namespaces, each
announcing its pod CIDR; full mesh -> reflectors, a reflector killed and restarted, back to the
mesh, while every node's kernel FIB is sampled: no required prefix may be missing at any sample.
And the failure path: a dead peer stops the migration with a clear message, in a working state."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from bgp.core.inventory import Inventory
from bgp.core.model import Timers
from bgp.core.planner import SessionPlan, mesh_plan, plan, speakers_for
from bgp.migrate import MigrationError, run_migration
from labs.bgpmigrate import lab_inventory, migration_lab, run_migration_lab, speaker_class
from labs.bgpspeakers import BgpSpeaker
from labs.l2lab import L2Lab
from labs.runid import RunDir

pytestmark = [pytest.mark.peers, pytest.mark.root]

MeshLab = tuple[Inventory, SessionPlan, SessionPlan, dict[str, BgpSpeaker], L2Lab]


def test_mesh_to_reflectors_and_back_loses_no_prefix_at_any_sample() -> None:
    lines: list[str] = []
    report = run_migration_lab(nodes=12, batch=10, progress=lines.append)
    text = "\n".join([*lines, *report.lines()])
    assert report.ok, text
    assert {"bird", "frr"} == set(report.kinds.values())
    assert report.mesh_sessions == 66 and report.rr_sessions < 30
    names = [p.name for p in report.phases]
    assert names[0] == "mesh -> reflectors" and names[-1] == "reflectors -> mesh"
    assert any(n.startswith("kill reflector") for n in names)
    for phase in report.phases:
        assert phase.fib.samples >= 10, text
        assert phase.fib.max_gap_ms <= 100, text  # every FIB sampled at least every 100 ms
    print(text)


@pytest.fixture
def mesh_lab() -> Iterator[tuple[Inventory, SessionPlan, SessionPlan, dict[str, BgpSpeaker], L2Lab]]:
    """Four nodes (BIRD, FRR, BIRD, FRR) up in a full mesh."""
    inv = lab_inventory(4)
    mesh, rr = mesh_plan(inv), plan(inv)
    with RunDir() as run, migration_lab(4, run) as lab, ExitStack() as stack:
        cfg = speakers_for(inv, mesh.sessions, {}, Timers.lab())
        speakers = {
            n: stack.enter_context(speaker_class(int(n[1:]))(lab.ns(n), run.path, cfg[n])) for n in inv.names
        }
        for sp in speakers.values():
            sp.wait_established(timeout=30)
        yield inv, mesh, rr, speakers, lab


def test_a_dead_peer_stops_the_migration_with_the_topology_still_whole(mesh_lab: MeshLab) -> None:
    inv, mesh, rr, speakers, _ = mesh_lab
    client = next(n for n in inv.names if n not in rr.reflectors)
    speakers[client].kill()
    time.sleep(0.5)
    with pytest.raises(MigrationError) as info:
        run_migration(inv, mesh, rr, speakers, timers=Timers.lab(), step_timeout=6)
    message = str(info.value)
    assert f"{client}: applying the step's config failed" in message and "did not settle" in message
    assert info.value.step.kind == "add"  # stopped before anything old was removed


def test_an_unreachable_peer_times_out_naming_the_sessions(mesh_lab: MeshLab) -> None:
    inv, mesh, rr, speakers, lab = mesh_lab
    client = next(n for n in inv.names if n not in rr.reflectors)
    subprocess.run(["ip", "-n", lab.ns(client), "link", "set", lab.underlay[client], "down"], check=True)
    with pytest.raises(MigrationError) as info:
        run_migration(inv, mesh, rr, speakers, timers=Timers.lab(), step_timeout=5)
    assert info.value.step.kind == "add" and "did not settle" in str(info.value)
    assert any(
        p.startswith(f"{client}: session to") or f"session to {client}" in p for p in info.value.problems
    )
