"""Zero-gap restart and reload: under steady load, `netkit dns restart`, SIGUSR2 and SIGHUP lose
no query, and the cache survives (handed over, or saved on stop and warmed on start)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from labs.dnspeers import NsdServer, Zone
from labs.runid import RunDir, free_port
from tests.conftest import hp
from tests.dnshelpers import Load, alive, metric, wait_for

pytestmark = pytest.mark.peers


@pytest.fixture
def serve(run_dir: RunDir, nsd: NsdServer) -> Iterator[dict]:
    port, mport = free_port(), free_port()
    ctl = str(run_dir.path / "dns.ctl")
    cache = str(run_dir.path / "dns.cache")
    log = (run_dir.path / "serve.log").open("w")
    args = [
        sys.executable,
        "-m",
        "netkit.cli",
        "dns",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        hp(nsd),
        "--metrics",
        f"127.0.0.1:{mport}",
        "--control",
        ctl,
        "--cache-file",
        cache,
    ]
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    pids = [proc.pid]
    info = {
        "port": port,
        "mport": mport,
        "ctl": ctl,
        "cache": cache,
        "args": args,
        "pids": pids,
        "log": log,
        "proc": proc,
    }
    try:
        assert wait_for(lambda: os.path.exists(ctl), timeout=10), Path(log.name).read_text()
        yield info
    finally:
        for pid in pids:  # the successors are not our children: stop them by PID
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in pids:
            wait_for(lambda p=pid: not alive(p), timeout=5)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(5)
        log.close()


def restart(ctl: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "netkit.cli", "dns", "restart", "--control", ctl],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def warm(port: int, names: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for n in names:
            s.sendto(dns.message.make_query(n, "A").to_wire(), ("127.0.0.1", port))
            s.recv(4096)


def test_restart_under_load_loses_nothing_and_keeps_the_cache(serve: dict, lab_zone_data: Zone) -> None:
    names = [f"h{i}.example.test" for i in range(100)]
    warm(serve["port"], names)
    with Load(serve["port"], names, qps=1500) as load:
        time.sleep(0.5)
        for _ in range(3):
            result = restart(serve["ctl"])
            serve["pids"].append(result["new_pid"])
            assert wait_for(lambda old=result["old_pid"]: not alive(old), timeout=10)
            time.sleep(0.5)
    assert load.sent > 2000
    assert load.lost == 0 and load.wrong == 0, (load.sent, load.lost, load.wrong)
    # the third process never asked upstream for the warm names: its cache came with it
    assert metric(serve["mport"], "netkit_dns_cache_misses_total") == 0
    assert metric(serve["mport"], "netkit_dns_cache_entries") >= 100


def test_sigusr2_restarts_too(serve: dict) -> None:
    os.kill(serve["proc"].pid, signal.SIGUSR2)
    assert wait_for(lambda: serve["proc"].poll() is not None, timeout=10)
    out = Path(serve["log"].name).read_text()
    new_pid = next(json.loads(line)["new_pid"] for line in out.splitlines() if '"handed over"' in line)
    serve["pids"].append(new_pid)
    warm(serve["port"], ["h1.example.test"])


def test_sighup_under_load_loses_nothing(serve: dict) -> None:
    names = [f"h{i}.example.test" for i in range(50)]
    warm(serve["port"], names)
    with Load(serve["port"], names, qps=1500) as load:
        for _ in range(5):
            time.sleep(0.3)
            serve["proc"].send_signal(signal.SIGHUP)
        time.sleep(0.3)
    assert load.lost == 0 and load.wrong == 0, (load.sent, load.lost, load.wrong)
    assert Path(serve["log"].name).read_text().count("configuration reloaded") == 5


def test_stop_saves_the_cache_and_start_warms_from_it(serve: dict, nsd: NsdServer) -> None:
    names = [f"h{i}.example.test" for i in range(30)]
    warm(serve["port"], names)
    serve["proc"].send_signal(signal.SIGTERM)
    assert serve["proc"].wait(10) == 0
    assert os.path.getsize(serve["cache"]) > 30 * 50
    nsd.pause()  # only the snapshot can answer now
    try:
        proc = subprocess.Popen(serve["args"], stdout=serve["log"], stderr=serve["log"])
        serve["pids"].append(proc.pid)
        assert wait_for(lambda: os.path.exists(serve["ctl"]), timeout=10)
        warm(serve["port"], names)  # answered from the warmed cache, upstream frozen
        assert metric(serve["mport"], "netkit_dns_cache_misses_total") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        nsd.resume()


def test_a_failing_successor_leaves_the_old_process_serving(serve: dict, run_dir: RunDir) -> None:
    # a successor that is not ready within the timeout is killed; the old process goes on
    warm(serve["port"], ["h1.example.test"])
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "netkit.cli",
            "dns",
            "restart",
            "--control",
            serve["ctl"],
            "--timeout",
            "0.001",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 1 and "did not become ready" in bad.stderr
    assert serve["proc"].poll() is None
    warm(serve["port"], ["h1.example.test"])


def test_restart_without_a_server_is_a_clear_error(run_dir: RunDir) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "netkit.cli", "dns", "restart", "--control", str(run_dir.path / "x")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1 and "No such file" in r.stderr
