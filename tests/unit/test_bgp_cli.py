"""`netkit bgp plan/render/migrate --dry-run` from the command line: output, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netkit.cli import main

INVENTORY = "asn: 64512\nnodes:\n" + "".join(
    f"  - {{name: n{i}, address: 198.18.0.{i}, alt_address: 198.18.1.{i}, labels: {{zone: z{i % 3}}}, "
    f"prefixes: [198.19.{i}.0/24]}}\n"
    for i in range(1, 10)
)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return path


def test_plan_prints_reflectors_and_diff_and_writes_the_plan(
    inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "plan.yaml"
    assert main(["bgp", "plan", "-f", str(inventory), "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "3 reflectors for 9 nodes" in out and "(full mesh: 36)" in out
    assert "diff against the current plan (full mesh)" in out
    saved = yaml.safe_load(out_file.read_text())
    assert saved["kind"] == "rr" and len(saved["reflectors"]) == 3
    # planning again against the plan in force changes nothing
    assert main(["bgp", "plan", "-f", str(inventory), "--current", str(out_file)]) == 0
    assert "0 sessions added, 0 removed, 0 changed" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["bird", "frr", "gobgp"])
def test_render_writes_one_file_per_node(inventory: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / fmt
    assert main(["bgp", "render", "-f", str(inventory), "--to", fmt, "--out", str(out)]) == 0
    assert len(list(out.iterdir())) == 9


def test_migrate_dry_run_lists_make_before_break_steps(
    inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bgp", "migrate", "-f", str(inventory), "--dry-run", "--batch", "5"]) == 0
    out = capsys.readouterr().out
    assert "add: " in out and "retire: " in out and "gate: " in out and "remove: " in out
    assert out.index("add: ") < out.index("gate: ") < out.index("remove: ")


def test_invalid_inventory_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVENTORY.replace("address: 198.18.0.2,", "address: 198.18.0.1,"))
    assert main(["bgp", "plan", "-f", str(bad)]) == 2
    assert "duplicate address 198.18.0.1" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bgp", "plan", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "netkit bgp plan: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speakers: [\n", "not valid YAML"),
        ("nodes: {}\n", "must be a mapping with speakers:"),
        ("speakers: {n1: {kind: quagga}}\n", "speakers.n1: must be a mapping with kind: bird or kind: frr"),
        ("speakers: {n1: {kind: bird, control: /x}}\n", "speakers.n1.config: required"),
        (
            "timers: {hold: 1}\nspeakers: {n1: {kind: frr}}\n",
            "timers.hold: 1 is out of range: must be between 3 and 65535",
        ),
    ],
)
def test_speakers_file_errors_name_the_field(text: str, message: str) -> None:
    from bgp.control import ControlError, load_speakers

    with pytest.raises(ControlError) as info:
        load_speakers(text)
    assert message in str(info.value)


def test_migrate_without_speakers_or_dry_run_is_refused(
    inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bgp", "migrate", "-f", str(inventory)]) == 2
    assert "give --speakers FILE" in capsys.readouterr().err


def test_o_is_the_output_format_and_a_path_there_points_at_out(
    inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bgp", "plan", "-f", str(inventory), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "rr"
    with pytest.raises(SystemExit) as info:
        main(["bgp", "plan", "-f", str(inventory), "-o", "plan.yaml"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: netkit bgp plan" in err and "to write a file use --out plan.yaml" in err


def test_render_of_an_unknown_node_names_the_nodes(
    inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bgp", "render", "-f", str(inventory), "--to", "bird", "--node", "n99"]) == 2
    assert "--node n99: no such node in the inventory (it has: n1, n2" in capsys.readouterr().err


def test_a_plan_naming_unknown_nodes_is_refused(
    inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "plan.yaml"
    stale.write_text(yaml.safe_dump({"kind": "rr", "sessions": [{"a": "n1", "b": "gone", "kind": "peer"}]}))
    for argv in (
        ["render", "-f", str(inventory), "--to", "bird", "--plan", str(stale)],
        ["migrate", "-f", str(inventory), "--current", str(stale), "--dry-run"],
    ):
        assert main(["bgp", *argv]) == 2
        assert "sessions name nodes not in the inventory: gone" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["migrate", "render"])
def test_a_target_plan_that_would_lose_routes_is_refused_before_any_step(
    inventory: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty (or cut) target was "remove every session it does not list": it planned, and with
    --speakers ran, the removal of the whole mesh."""
    plan_file = tmp_path / "plan.yaml"
    assert main(["bgp", "plan", "-f", str(inventory), "--out", str(plan_file)]) == 0
    good = yaml.safe_load(plan_file.read_text())
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: mesh\nsessions: []\n")
    cut = tmp_path / "cut.yaml"  # n5 loses its sessions, though the plan is for n5 too
    cut.write_text(
        yaml.safe_dump({**good, "sessions": [s for s in good["sessions"] if "n5" not in (s["a"], s["b"])]})
    )
    blank = tmp_path / "blank.yaml"
    blank.write_text("")
    capsys.readouterr()
    flag = "--to" if command == "migrate" else "--plan"
    tail = ["--dry-run"] if command == "migrate" else ["--to", "bird"]
    for target, expected in (
        (empty, [f"{empty}: n{i} would learn no route from" for i in range(1, 10)]),
        (
            cut,
            [f"{cut}: n5 would learn no route from n1, n2, n3, n4, n6 and 3 more (0 sessions in the plan)"],
        ),
        (blank, [f"{blank}: not a netkit plan: empty, not a mapping with kind and sessions"]),
    ):
        assert main(["bgp", command, "-f", str(inventory), flag, str(target), *tail]) == 2
        out, err = capsys.readouterr()
        assert out == "", out  # not one step, not one config
        for line in expected:
            assert f"netkit bgp {command}: {line}" in err, err
        if target is not blank:
            assert "refused: running this plan would lose routes" in err
    # the planner's own plan passes, and so does a node leaving by not being in nodes:
    assert main(["bgp", command, "-f", str(inventory), flag, str(plan_file), *tail]) == 0
    leaving = tmp_path / "leaving.yaml"
    leaving.write_text(
        yaml.safe_dump(
            {**yaml.safe_load(cut.read_text()), "nodes": [f"n{i}" for i in range(1, 10) if i != 5]}
        )
    )
    assert main(["bgp", command, "-f", str(inventory), flag, str(leaving), *tail]) == 0


def test_a_plan_file_naming_no_nodes_is_for_the_inventory_s(inventory: Path, tmp_path: Path) -> None:
    """The live migration checks the routes of the nodes the target is for: with none named it
    checked nothing, and its gate passed on any session set."""
    from netkit.cli.bgp import _load, _load_plan

    inv = _load(str(inventory))
    path = tmp_path / "plan.yaml"
    assert main(["bgp", "plan", "-f", str(inventory), "--out", str(path)]) == 0
    raw = yaml.safe_load(path.read_text())
    del raw["nodes"]
    path.write_text(yaml.safe_dump(raw))
    assert _load_plan(str(path), inv, target=True).nodes == tuple(sorted(inv.names))
