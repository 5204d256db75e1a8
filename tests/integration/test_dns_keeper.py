"""``keeper: true``: the resolver runs as a worker under a process that holds its sockets (what
``deploy/dnscache`` runs). A worker that crashes (SIGKILL) is forked again at once on the same
sockets; ``netkit dns restart`` re-executes the keeper on them. Under 2,000 queries a second,
each with one chance and a 1 s deadline: a re-execution loses nothing; a SIGKILL loses at most
the query the worker had in its hands at that instant (what the kernel still queued is kept)."""

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
from typing import Any

import dns.message
import dns.rcode
import pytest

from dnscache.bind import SO_RCVBUFFORCE
from labs.dnspeers import NsdServer
from labs.runid import RunDir
from tests.conftest import hp
from tests.dnshelpers import Load, alive, metric, wait_for
from tests.integration.test_dns_restart import restart
from tests.integration.test_dns_takeover import NAMES, Pods, warm

pytestmark = pytest.mark.peers


@pytest.fixture
def pods(run_dir: RunDir, nsd: NsdServer) -> Iterator[Pods]:
    p = Pods(run_dir.path, hp(nsd), keeper=True)
    try:
        yield p
    finally:
        p.stop_all()


def status(control: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(control)
        s.sendall(b'{"cmd": "status"}\n')
        reply: dict[str, Any] = json.loads(s.makefile("rb").readline())
        return reply


def worker_pid(control: str) -> int | None:
    """The serving worker's PID; None once nothing serves ``control``."""
    try:
        return int(status(control)["pid"])
    except OSError:
        return None


def test_a_crashed_worker_loses_at_most_the_query_in_its_hands(pods: Pods) -> None:
    keeper, ready = pods.start("pod")
    assert wait_for(ready.exists, timeout=15), pods.log("pod")
    warm(pods.port)
    with Load(pods.port, NAMES, qps=2000) as load:
        time.sleep(0.5)
        for _ in range(3):
            worker = status(pods.control)["pid"]
            os.kill(worker, signal.SIGKILL)
            assert wait_for(lambda w=worker: status(pods.control)["pid"] != w, timeout=5)
            time.sleep(0.7)
    print(f"{load.sent} at {load.rate:.0f}/s over 3 worker crashes: {load.lost} lost, {load.wrong} wrong")
    assert load.rate >= 1900, load.rate
    # A datagram the worker has read and not yet answered dies with it: at most one per kill
    # (hot names are answered within the read), nothing else.
    assert load.lost <= 3 and load.wrong == 0, (load.sent, load.lost, load.wrong)
    assert keeper.poll() is None and status(pods.control)["supervisor"] == keeper.pid
    assert pods.log("pod").count("worker died") == 3


def test_queries_queued_while_the_worker_is_dead_are_all_answered(pods: Pods) -> None:
    """The keeper holds the sockets, so what arrives between a worker's death and its successor
    waits in the kernel's queue: the worker is stopped (it reads nothing), 300 queries are sent,
    the worker is killed, and its successor answers every one of them."""
    keeper, ready = pods.start("pod")
    assert wait_for(ready.exists, timeout=15), pods.log("pod")
    warm(pods.port)
    worker = status(pods.control)["pid"]
    os.kill(worker, signal.SIGSTOP)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)  # 300 answers come at once
    try:
        sent: dict[int, dns.message.Message] = {}
        for i in range(300):
            q = dns.message.make_query(NAMES[i % len(NAMES)], "A", id=i + 1)
            client.sendto(q.to_wire(), ("127.0.0.1", pods.port))
            sent[q.id] = q
        time.sleep(0.2)
        os.kill(worker, signal.SIGKILL)
        client.settimeout(5)
        while sent:
            try:
                data = client.recv(4096)
            except TimeoutError:
                raise AssertionError(f"{len(sent)} never answered\n" + pods.log("pod")) from None
            r = dns.message.from_wire(data)
            q = sent.pop(r.id, None)
            assert q is not None and r.rcode() == dns.rcode.NOERROR and r.answer, r
            assert r.question == q.question
    finally:
        client.close()
    assert status(pods.control)["pid"] != worker and keeper.poll() is None


def test_restart_reexecutes_on_the_same_sockets_and_keeps_the_cache(pods: Pods) -> None:
    keeper, ready = pods.start("pod")
    assert wait_for(ready.exists, timeout=15), pods.log("pod")
    warm(pods.port)
    with Load(pods.port, NAMES, qps=2000) as load:
        time.sleep(0.5)
        for _ in range(3):
            old_worker = status(pods.control)["pid"]
            out = restart(pods.control)
            assert out == {"old_pid": old_worker, "new_pid": keeper.pid}, out
            assert wait_for(lambda w=old_worker: not alive(w), timeout=5)
            time.sleep(1.2)  # the new worker reports its counters within a second
            assert metric(pods.mport, "netkit_dns_cache_misses_total") == 0
            assert metric(pods.mport, "netkit_dns_cache_entries") >= len(NAMES)
    print(
        f"{load.sent} queries at {load.rate:.0f}/s over 3 re-executions: {load.lost} lost, {load.wrong} wrong"
    )
    assert (load.lost, load.wrong) == (0, 0), (load.sent, load.lost, load.wrong)
    assert keeper.poll() is None and ready.read_text().strip() == str(status(pods.control)["pid"])
    assert pods.log("pod").count("re-executing on the same sockets") == 3


def test_a_worker_that_keeps_dying_ends_the_keeper(pods: Pods) -> None:
    keeper, ready = pods.start("pod")
    assert wait_for(ready.exists, timeout=15), pods.log("pod")
    for _ in range(6):  # more than MAX_RESTARTS within the window
        worker = worker_pid(pods.control)
        if worker is None:
            break
        os.kill(worker, signal.SIGKILL)
        assert wait_for(lambda w=worker: worker_pid(pods.control) != w, timeout=5)
    assert keeper.wait(10) == 1, pods.log("pod")
    assert "workers keep dying, giving up" in pods.log("pod")
    assert not Path(pods.control).exists()


def test_restart_with_several_workers_is_refused_and_they_serve_on(pods: Pods, run_dir: RunDir) -> None:
    ready = run_dir.path / "w.ready"
    tmp = run_dir.path / "tmp"  # where a restart would make its temporary cache snapshot
    tmp.mkdir()
    proc = subprocess.Popen(
        [*pods.argv(ready, takeover=False), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    pods.started.append(proc)
    assert wait_for(ready.exists, timeout=15)
    r = subprocess.run(
        [sys.executable, "-m", "netkit.cli", "dns", "restart", "--control", pods.control],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode != 0 and "restart works with workers: 1" in r.stderr, r.stderr
    assert list(tmp.iterdir()) == []  # the refusal leaves no snapshot file behind
    warm(pods.port)
    assert proc.poll() is None


def test_a_restart_into_a_configuration_without_keeper_retires_the_worker(
    pods: Pods, run_dir: RunDir
) -> None:
    """The file loses ``keeper: true`` before a restart: the re-executed process serves alone
    and stops the old worker itself; nothing is lost."""
    ready = run_dir.path / "file.ready"
    config = run_dir.path / "dns.yaml"
    base = (
        f"listen: ['127.0.0.1:{pods.port}']\nupstream: ['{pods.upstream}']\n"
        f"metrics: '127.0.0.1:{pods.mport}'\ncontrol: '{pods.control}'\nready_file: '{ready}'\n"
    )
    config.write_text(base + "keeper: true\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netkit.cli", "dns", "serve", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pods.started.append(proc)
    assert wait_for(ready.exists, timeout=15)
    warm(pods.port)
    worker = status(pods.control)["pid"]
    config.write_text(base)
    with Load(pods.port, NAMES, qps=1000) as load:
        time.sleep(0.3)
        assert restart(pods.control) == {"old_pid": worker, "new_pid": proc.pid}
        time.sleep(0.3)
    assert (load.lost, load.wrong) == (0, 0), (load.sent, load.lost, load.wrong)
    assert status(pods.control) == {
        "pid": proc.pid,
        "supervisor": None,
        "ready": True,
        "cache_entries": len(NAMES),
    }
    assert wait_for(lambda: not alive(worker) or Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z")
