"""A DaemonSet surge of the node agent, as ``deploy/agent`` rolls it (maxSurge 1, maxUnavailable
0): a second ``netkit agent`` for the same node starts beside the first, on the same metrics
address and state directory, while a DNS load runs against the node's cache. The new agent's
cache takes the old one's sockets and entries over; the old agent leaves DNS to it (it does not
start its cache again) and stops with exit 0 on SIGTERM; not one query is lost or wrong."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from labs.apiserver.lab import ApiLab
from labs.dnspeers import NsdServer
from labs.runid import RunDir, free_port
from tests import dnshelpers
from tests.conftest import hp
from tests.kubehelpers import G, V, cluster, wait_for


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[tuple[ApiLab, client.CustomObjectsApi]]:
    with cluster(run_dir.path / "api") as (lab, api):
        yield lab, client.CustomObjectsApi(api)


def agent(lab: ApiLab, state: Path, metrics: int, log: Path) -> subprocess.Popen[bytes]:
    argv = ["agent", "--node", "n1", "--kubeconfig", str(lab.kubeconfig), "--state-dir", str(state)]
    argv += ["--metrics", f"127.0.0.1:{metrics}", "--resync", "2", "--log-format", "json"]
    return subprocess.Popen(
        [sys.executable, "-m", "netkit.cli", *argv], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_a_surge_agent_takes_the_cache_over_without_a_lost_query(
    world: tuple[ApiLab, client.CustomObjectsApi], nsd: NsdServer, run_dir: RunDir
) -> None:
    lab, co = world
    dns_port, metrics = free_port(), free_port()
    config = {"listen": [f"127.0.0.1:{dns_port}"], "upstream": [hp(nsd)], "cache_size": 1000}
    co.create_cluster_custom_object(
        G,
        V,
        "nodestates",
        {
            "apiVersion": f"{G}/{V}",
            "kind": "NodeState",
            "metadata": {"name": "n1"},
            "spec": {"nodeName": "n1", "dns": {"name": "node-local", "generation": 1, "config": config}},
        },
    )
    state = run_dir.path / "state"
    old = agent(lab, state, metrics, run_dir.path / "old.log")
    new: subprocess.Popen[bytes] | None = None
    try:
        assert wait_for(lambda: ready(metrics), 30), (run_dir.path / "old.log").read_text()[-2000:]
        first = int((state / "dns.pid").read_text())
        names = [f"h{i}.example.test" for i in range(50)]
        with dnshelpers.Load(dns_port, names, 300) as load:
            time.sleep(1.0)
            new = agent(lab, state, metrics, run_dir.path / "new.log")  # the surge pod, same port
            assert wait_for(lambda: int((state / "dns.pid").read_text()) != first, 30), (
                run_dir.path / "new.log"
            ).read_text()[-2000:]
            assert wait_for(lambda: ready(metrics), 10)
            time.sleep(1.0)
            old.send_signal(signal.SIGTERM)  # the old pod deleted once the new one is ready
            assert old.wait(20) == 0
            time.sleep(1.0)
        assert load.sent > 600 and load.lost == 0 and load.wrong == 0, (load.sent, load.lost, load.wrong)
        second = int((state / "dns.pid").read_text())
        assert Path(f"/proc/{second}").exists() and not Path(f"/proc/{first}").exists()
        log = (run_dir.path / "old.log").read_text()
        assert "taken over by a successor" in log and "starting it again" not in log
        assert new.poll() is None
        new.send_signal(signal.SIGTERM)
        assert new.wait(20) == 0
        assert not Path(f"/proc/{second}").exists()  # the agent's cache stops with it
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
        for pid_file in state.glob("dns.pid"):  # a cache left by a killed agent: by its PID
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                if str(state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
