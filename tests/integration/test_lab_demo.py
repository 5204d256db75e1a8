"""``netkit lab demo`` at its smallest (4 nodes, 3 s outages), as ``make demo`` runs it: every
phase's proof holds, the report has its figures and plots, the last line is the report's path,
and nothing of the run is left: no namespace, no process, no directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labs.runid import RunDir

pytestmark = [pytest.mark.root, pytest.mark.peers]
PHASES = ["mesh", "reflectors", "tenants", "isolation", "rr-killed"]
PHASES += ["dns-upstream", "dns-roll", "api-down", "link-flap", "doctor", "delete"]


def test_the_demo_proves_every_phase_and_leaves_nothing(run_dir: RunDir) -> None:
    out = run_dir.path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "netkit.cli",
            "lab",
            "demo",
            "--nodes",
            "4",
            "--fault-seconds",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = done.stdout.strip().splitlines()
    assert "$ kubectl get bgptopology cluster -o wide" in done.stdout  # what kubectl showed, shown
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert lines[-1] == str((out / "index.html").resolve())
    report = json.loads((out / "report.json").read_text())
    phases = {p["name"]: p for p in report["phases"]}
    assert list(phases) == PHASES
    assert all(p["ok"] for p in phases.values()) and report["ok"]
    assert phases["reflectors"]["figures"]["missing prefix-samples"] == 0
    assert phases["reflectors"]["figures"]["FIB samples"] > 10
    iso = phases["isolation"]["figures"]
    assert iso["leaks"] == iso["misses"] == iso["broadcast leaks"] == iso["broadcast misses"] == 0
    assert phases["rr-killed"]["figures"]["missing prefix-samples"] == 0
    assert (
        phases["dns-upstream"]["figures"]["failed"] == 0 and phases["dns-upstream"]["figures"]["queries"] > 0
    )
    assert phases["dns-roll"]["figures"]["failed"] == 0 and phases["dns-roll"]["figures"]["nodes rolled"] == 4
    assert phases["api-down"]["figures"]["kernel objects changed"] == "none"
    assert phases["doctor"]["figures"]["netkit doctor --fix (agent wedged)"] == "repaired"
    assert phases["doctor"]["figures"]["NetkitDNSAddressMissing"] == "False"
    assert phases["delete"]["figures"]["nodes with red left"] == 0
    page = (out / "index.html").read_text()
    assert "every proof held" in page and "Isolation matrix" in page and "kubectl get netkit" in page
    assert (out / "prefixes.png").stat().st_size > 0 and (out / "dns.png").stat().st_size > 0
    # nothing of the run left behind
    match = re.search(r"in (/tmp/(nk[0-9a-f]{4})-\S+)", done.stdout)
    assert match, done.stdout[:500]
    path, rid = match.group(1), match.group(2)
    assert not Path(path).exists()
    assert not [n for n in os.listdir("/run/netns") if n.startswith(rid)]
    leftover = subprocess.run(["pgrep", "-f", path], capture_output=True, text=True).stdout.split()
    assert not leftover, leftover


def test_lab_shell_opens_a_shell_inside_the_node(run_dir: RunDir) -> None:
    """What --keep leaves for exploring: `netkit lab shell NODE` runs a shell in the node's
    namespace with the lab's kubeconfig; a node the lab has not is refused, naming the ones it has."""
    ns = f"{run_dir.run_id}-shell"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        lab = run_dir.path / "lab.json"
        lab.write_text(json.dumps({"kubeconfig": "/tmp/lab-kubeconfig", "nodes": {"n1": ns}}))
        cmd = [sys.executable, "-m", "netkit.cli", "lab", "shell"]
        done = subprocess.run(
            [*cmd, "n1", "--lab", str(lab)],
            input="ip -o link show; echo KUBECONFIG=$KUBECONFIG\n",
            env={**os.environ, "SHELL": "/bin/sh"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert "1: lo:" in done.stdout and "KUBECONFIG=/tmp/lab-kubeconfig" in done.stdout
        assert len([x for x in done.stdout.splitlines() if ": <" in x]) == 1  # only the node's lo
        bad = subprocess.run([*cmd, "n9", "--lab", str(lab)], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and "not a node of this lab (it has n1)" in bad.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
