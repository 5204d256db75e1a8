"""No destructive surprises from the L2 CLI: a node the file does not name is refused before
anything is planned (apply, status, agent start and agent reload); removing every network from a
node takes a file that says so; startup failures are one line and an exit code."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labs.l2lab import L2Lab
from labs.runid import free_port
from tests.integration.test_l2_agent import (
    BLUE_BR,
    RED_BR,
    cli,
    lab,
    networks,
    observe,
    wait_for,
    workdir,
    write,
)

pytestmark = pytest.mark.root
__all__ = ["lab", "workdir"]  # fixtures


def links(lab: L2Lab, node: str) -> dict[str, object]:
    """The node's owned links and their FDB entries: what a wrong plan would destroy."""
    state = observe(lab, node)
    return {"links": {lk.name: lk for lk in state.owned_links()}, "fdb": state.owned_fdb()}


def one_error_line(stderr: str, prog: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", ["apply", "apply --dry-run", "apply --check", "status", "agent"])
def test_a_node_the_file_does_not_name_is_refused_and_nothing_changes(
    lab: L2Lab, workdir: Path, command: str
) -> None:
    lab.apply(networks(lab))
    before = links(lab, "n1")
    assert BLUE_BR in observe(lab, "n1").links and RED_BR in observe(lab, "n1").links
    f = write(workdir, "nets.yaml", networks(lab))
    sub, *flags = command.split()
    res = cli(sub, "-f", f, "--node", "n7", "--netns", lab.ns("n1"), *flags, timeout=20)
    assert res.returncode == 2, res.stdout + res.stderr
    line = one_error_line(res.stderr, f"netkit l2 {sub}")
    assert f"node 'n7' is not named in {f}" in line and "which names: n1, n2, n3" in line
    assert "destroy" not in res.stdout and res.stdout == ""
    assert links(lab, "n1") == before


def test_a_short_hostname_where_the_file_has_the_fqdn_is_refused_with_a_hint(
    lab: L2Lab, workdir: Path
) -> None:
    doc = yaml.safe_load(networks(lab))
    for net in doc["networks"]:
        net["members"] = {f"{n}.dc1.example": ip for n, ip in net["members"].items()}
        net["ports"] = {f"{n}.dc1.example": p for n, p in net["ports"].items()}
    f = write(workdir, "fqdn.yaml", yaml.safe_dump(doc))
    res = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "(did you mean n1.dc1.example?)" in one_error_line(res.stderr, "netkit l2 apply")
    ok = cli("apply", "-f", f, "--node", "n1.dc1.example", "--netns", lab.ns("n1"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert BLUE_BR in observe(lab, "n1").links


def test_removing_every_network_from_a_node_takes_a_file_that_says_so(lab: L2Lab, workdir: Path) -> None:
    lab.apply(networks(lab))
    # n1 in no network and not listed: refused
    doc = yaml.safe_load(networks(lab))
    for net in doc["networks"]:
        net["members"].pop("n1")
        net["ports"].pop("n1", None)
    f = write(workdir, "without-n1.yaml", yaml.safe_dump(doc))
    res = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert res.returncode == 2 and BLUE_BR in observe(lab, "n1").links, res.stderr
    # listed under nodes: and in no network: the file says so, everything goes
    doc["nodes"] = ["n1", "n2", "n3"]
    f = write(workdir, "n1-emptied.yaml", yaml.safe_dump(doc))
    res = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 to destroy" in res.stdout or "destroy" in res.stdout
    assert not observe(lab, "n1").owned_links()


def test_the_agent_keeps_its_networks_when_a_reload_no_longer_names_its_node(
    lab: L2Lab, workdir: Path
) -> None:
    path = Path(write(workdir, "nets.yaml", networks(lab)))
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "netkit.cli", "l2", "agent", "-f", str(path), "--node", "n1"),
            *("--netns", lab.ns("n1"), "--resync", "0.5", "--log-level", "info"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: BLUE_BR in observe(lab, "n1").links and RED_BR in observe(lab, "n1").links, 10, 0.05)
        doc = yaml.safe_load(networks(lab))
        for net in doc["networks"]:
            net["members"] = {f"{n}.renamed": ip for n, ip in net["members"].items()}
            net["ports"] = {}
        path.write_text(yaml.safe_dump(doc))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)  # three resyncs
        assert BLUE_BR in observe(lab, "n1").links and RED_BR in observe(lab, "n1").links
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert '"msg": "reload refused, keeping the current networks"' in err
        assert "node 'n1' is not named" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_agent_with_its_metrics_port_taken_is_one_line_and_exit_1(lab: L2Lab, workdir: Path) -> None:
    f = write(workdir, "nets.yaml", networks(lab))
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        res = cli("agent", "-f", f, "--node", "n1", "--netns", lab.ns("n1"), "--metrics", f"127.0.0.1:{port}")
    assert res.returncode == 1, res.stderr
    line = one_error_line(res.stderr, "netkit l2 agent")
    assert f"--metrics 127.0.0.1:{port}: Address already in use" in line
    assert not observe(lab, "n1").owned_links()  # refused before it built anything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["status", "-f", "x.yaml", "--log-level", "verbose"],
            "argument --log-level: invalid choice: 'verbose'",
        ),
        (["verify", "--settle", "-1"], "argument --settle: -1 is out of range"),
        (["agent", "-f", "x.yaml", "--resync", "-5"], "argument --resync: -5 is out of range"),
        (["apply", "-f", "x.yaml", "--probe", "300.1.1.1"], "argument --probe: '300.1.1.1' is not an IP"),
        (["agent", "-f", "x.yaml", "--metrics", "localhost:99999"], "argument --metrics:"),
        (["apply", "-f", "x.yaml", "--rollback-timeout", "nan"], "argument --rollback-timeout: nan is out"),
    ],
)
def test_bad_flags_are_refused_with_the_subcommands_usage(args: list[str], message: str) -> None:
    res = cli(*args)
    assert res.returncode == 2
    assert f"usage: netkit l2 {args[0]}" in res.stderr and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
