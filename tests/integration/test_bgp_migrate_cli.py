"""`netkit bgp migrate --speakers FILE` drives running BIRD and FRR speakers it did not start
(reached through their control sockets, in namespaces), mesh -> reflectors -> mesh; a bad
speakers file is refused before anything changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from bgp.core.model import Timers
from bgp.core.planner import mesh_plan, speakers_for
from labs.bgpmigrate import lab_inventory, migration_lab, speaker_class
from labs.bgpspeakers import BgpSpeaker, BirdSpeaker
from labs.runid import RunDir
from netkit.cli import main

pytestmark = [pytest.mark.peers, pytest.mark.root]

NODES = 6
TIMERS = {"hold": 9, "keepalive": 3, "connect_retry": 1}  # Timers.lab()


def inventory_yaml() -> str:
    inv = lab_inventory(NODES)
    nodes = [
        {
            "name": n.name,
            "address": n.address,
            "alt_address": n.alt_address,
            "labels": dict(n.labels),
            "prefixes": list(n.prefixes),
        }
        for n in inv.nodes
    ]
    return yaml.safe_dump({"asn": 64512, "nodes": nodes})


@pytest.fixture
def running_mesh(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, BgpSpeaker]]]:
    inv = lab_inventory(NODES)
    with RunDir() as run, migration_lab(NODES, run) as lab, ExitStack() as stack:
        cfg = speakers_for(inv, mesh_plan(inv).sessions, {}, Timers.lab())
        speakers = {
            n: stack.enter_context(speaker_class(int(n[1:]))(lab.ns(n), run.path, cfg[n])) for n in inv.names
        }
        for sp in speakers.values():
            sp.wait_established(timeout=30)
        entries = {}
        for n, sp in speakers.items():
            if isinstance(sp, BirdSpeaker):
                entries[n] = {"kind": "bird", "control": str(sp.ctl_path), "config": str(sp.conf_path)}
            else:
                entries[n] = {"kind": "frr", "vty_socket": str(sp.dir)}
            entries[n]["netns"] = lab.ns(n)
        spk = tmp_path / "speakers.yaml"
        spk.write_text(yaml.safe_dump({"timers": TIMERS, "speakers": entries}))
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(inventory_yaml())
        yield inventory, spk, speakers


def every_prefix_everywhere(speakers: dict[str, BgpSpeaker]) -> list[str]:
    want = {f"198.19.{i}.0/24" for i in range(1, NODES + 1)}
    return [
        f"{n} lacks {sorted(want - set(sp.routes()))}"
        for n, sp in speakers.items()
        if want - set(sp.routes())
    ]


def test_migrate_running_speakers_to_reflectors_and_back(
    running_mesh: tuple[Path, Path, dict[str, BgpSpeaker]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, spk, speakers = running_mesh
    plan_file = tmp_path / "plan.yaml"
    args = ["bgp", "migrate", "-f", str(inventory), "--speakers", str(spk), "--out", str(plan_file)]
    assert main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "step 1/" in out and "gate" in out and "total" in out
    in_force = yaml.safe_load(plan_file.read_text())
    assert in_force["kind"] == "rr" and any(s.get("alt") for s in in_force["sessions"])
    assert every_prefix_everywhere(speakers) == []
    assert main([*args[:-2], "--current", str(plan_file), "--to", "mesh"]) == 0, capsys.readouterr()
    assert every_prefix_everywhere(speakers) == []


def test_a_bad_speakers_file_changes_nothing(
    running_mesh: tuple[Path, Path, dict[str, BgpSpeaker]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, spk, speakers = running_mesh
    raw = yaml.safe_load(spk.read_text())
    del raw["speakers"]["n3"]
    raw["speakers"]["n1"]["colour"] = "red"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    before = {n: sp.sessions() for n, sp in speakers.items()}
    assert main(["bgp", "migrate", "-f", str(inventory), "--speakers", str(bad)]) == 2
    assert "speakers.n1.colour: unknown key" in capsys.readouterr().err
    del raw["speakers"]["n1"]["colour"]
    bad.write_text(yaml.safe_dump(raw))
    assert main(["bgp", "migrate", "-f", str(inventory), "--speakers", str(bad)]) == 2
    assert "no entry for n3" in capsys.readouterr().err
    assert {n: sp.sessions() for n, sp in speakers.items()} == before


def test_a_bird_that_cannot_be_reconfigured_keeps_its_config_file(tmp_path: Path) -> None:
    from bgp.control import BirdControl, ControlError
    from bgp.core.render.bird import render_bird

    inv = lab_inventory(3)
    mesh = speakers_for(inv, mesh_plan(inv).sessions, {}, Timers.lab())
    alone = speakers_for(inv, [], {}, Timers.lab())
    conf = tmp_path / "bird.conf"
    conf.write_text(render_bird(mesh["n1"]))
    before = conf.read_text()
    control = BirdControl(mesh["n1"], str(tmp_path / "no-such.ctl"), str(conf))
    with pytest.raises(ControlError, match="previous config restored"):
        control.apply(alone["n1"])  # bird -p accepts it; birdc cannot reach the daemon
    assert conf.read_text() == before and control.cfg == mesh["n1"]
    assert not (tmp_path / "bird.conf.netkit-new").exists()


def test_a_failed_step_writes_the_topology_in_force_to_resume_from(
    running_mesh: tuple[Path, Path, dict[str, BgpSpeaker]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    inventory, spk, speakers = running_mesh
    ns = speakers["n4"].netns
    links = subprocess.run(["ip", "-n", ns, "-br", "link"], capture_output=True, text=True, check=True).stdout
    underlay = next(
        line.split()[0].split("@")[0] for line in links.splitlines() if not line.startswith("lo ")
    )
    subprocess.run(["ip", "-n", ns, "link", "set", underlay, "down"], check=True)
    in_force = tmp_path / "in-force.yaml"
    args = [
        "bgp",
        "migrate",
        "-f",
        str(inventory),
        "--speakers",
        str(spk),
        "--out",
        str(in_force),
        "--step-timeout",
        "4",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "did not settle; the topology in force is this step's" in err and str(in_force) in err
    plan = yaml.safe_load(in_force.read_text())
    assert plan["kind"] == "rr" and any(s.get("alt") for s in plan["sessions"])  # the add step, applied
