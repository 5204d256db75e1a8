"""Upgrades the way a DaemonSet rolls them (``maxSurge: 1``): a new, independent ``netkit dns
serve`` (its own process tree, the same flags, ``takeover: true``) starts beside the running one,
takes its sockets and cache over the control socket, and the old one gets SIGTERM later. Under
2,000 queries a second, each with one chance and a 1 s deadline: nothing lost, nothing wrong, and
the warm names stay cache hits, five times in a row."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dnscache import handover
from labs.dnspeers import NsdServer
from labs.runid import RunDir, free_port
from tests.conftest import hp
from tests.dnshelpers import Load, metric, wait_for

pytestmark = pytest.mark.peers

NAMES = [f"h{i}.example.test" for i in range(150)]


@dataclass
class Pods:
    """Processes started as a kubelet starts containers: each in its own session, not our child
    tree's business; the same flags, a ready file of its own (an emptyDir per pod)."""

    run_dir: Path
    upstream: str
    keeper: bool = False  # each pod a worker under a socket keeper (what deploy/dnscache runs)
    port: int = field(default_factory=free_port)
    mport: int = field(default_factory=free_port)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def control(self) -> str:
        return str(self.run_dir / "dns.ctl")

    def argv(self, ready: Path, takeover: bool = True) -> list[str]:
        return [
            sys.executable, "-m", "netkit.cli", "dns", "serve",
            "--listen", f"127.0.0.1:{self.port}", "--upstream", self.upstream,
            "--metrics", f"127.0.0.1:{self.mport}", "--control", self.control,
            "--takeover", "true" if takeover else "false", "--ready-file", str(ready),
            "--keeper", "true" if self.keeper else "false",
        ]  # fmt: skip

    def start(
        self, name: str, takeover: bool = True, ready: Path | None = None, **kwargs: object
    ) -> tuple[subprocess.Popen[bytes], Path]:
        ready = ready or self.run_dir / f"{name}.ready"
        log = (self.run_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            self.argv(ready, takeover),
            stdout=log,
            stderr=log,
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        log.close()
        self.started.append(proc)
        return proc, ready

    def log(self, name: str) -> str:
        return (self.run_dir / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(params=[False, True], ids=["single", "keeper"])
def pods(request: pytest.FixtureRequest, run_dir: RunDir, nsd: NsdServer) -> Iterator[Pods]:
    p = Pods(run_dir.path, hp(nsd), keeper=request.param)
    try:
        yield p
    finally:
        p.stop_all()


def warm(port: int) -> None:
    from tests.integration.test_dns_restart import warm as warm_names

    warm_names(port, NAMES)


def test_overlap_upgrades_under_load_lose_nothing_and_keep_the_cache(pods: Pods) -> None:
    old, ready = pods.start("pod0")  # nothing to take over: binds
    assert wait_for(ready.exists, timeout=15), pods.log("pod0")
    assert "nothing to take over" in pods.log("pod0")
    warm(pods.port)
    with Load(pods.port, NAMES, qps=2000) as load:
        time.sleep(0.5)
        for i in range(1, 6):
            new, new_ready = pods.start(f"pod{i}")
            assert wait_for(new_ready.exists, timeout=15), pods.log(f"pod{i}")
            # the old pod hands over, stops reading, and waits for kubelet's SIGTERM
            assert wait_for(lambda r=ready: not r.exists(), timeout=5), pods.log(f"pod{i - 1}")
            time.sleep(0.3)
            assert old.poll() is None, pods.log(f"pod{i - 1}")
            old.send_signal(signal.SIGTERM)
            assert old.wait(10) == 0, pods.log(f"pod{i - 1}")
            # the new one never asked upstream for a warm name: the cache came along
            assert metric(pods.mport, "netkit_dns_cache_misses_total") == 0, i
            assert metric(pods.mport, "netkit_dns_cache_entries") >= len(NAMES)
            old, ready = new, new_ready
            time.sleep(0.3)
    print(f"{load.sent} queries at {load.rate:.0f}/s over 5 takeovers: {load.lost} lost, {load.wrong} wrong")
    assert load.rate >= 1900, load.rate
    assert (load.lost, load.wrong) == (0, 0), (load.sent, load.lost, load.wrong)
    assert "taking over" in pods.log("pod5") and "taken over" in pods.log("pod4")


def test_an_accidental_second_instance_still_gets_eaddrinuse(pods: Pods) -> None:
    first, ready = pods.start("first")
    assert wait_for(ready.exists, timeout=15), pods.log("first")
    pods.mport = free_port()  # its own metrics port: only the DNS addresses clash
    second, _ = pods.start("second", takeover=False)
    second.wait(15)
    assert second.returncode == 1
    assert "address already in use" in pods.log("second").lower()
    assert first.poll() is None and ready.exists()


def take_over_as(uid: int, control: str, raw: bool = False) -> str:
    """``handover.take_over`` from a forked child running as ``uid``: what it raised, or "taken";
    ``raw``: the request alone, without the successor's own check of the server's user."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on
        code = 0
        try:
            os.close(r)
            os.setgid(uid)
            os.setuid(uid)
            try:
                if raw:
                    with socket.socket(socket.AF_UNIX) as conn:
                        conn.connect(control)
                        conn.sendall(b'{"cmd": "takeover", "pid": 1}\n')
                        msg = conn.makefile("rb").readline().decode()
                else:
                    handover.take_over(control)
                    msg = "taken"
            except OSError as exc:
                msg = str(exc)
            os.write(w, msg.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_another_user_cannot_take_over(pods: Pods) -> None:
    """The control socket is the owner's only (0600); opened to all, the old process still
    refuses a successor of another user (SO_PEERCRED), and goes on serving."""
    first, ready = pods.start("first")
    assert wait_for(ready.exists, timeout=15), pods.log("first")
    nobody = 65534
    assert take_over_as(nobody, pods.control) == f"{pods.control}: Permission denied"
    os.chmod(pods.run_dir, 0o711)  # reachable (the socket is found), and open to all:
    os.chmod(pods.control, 0o666)
    assert (
        take_over_as(nobody, pods.control) == f"{pods.control} is served by user 0, not by us: not taken over"
    )
    refused = take_over_as(nobody, pods.control, raw=True)
    assert json.loads(refused) == {"error": f"refused a takeover by user {nobody}"}
    assert wait_for(lambda: "takeover failed, still serving" in pods.log("first"), timeout=5)
    assert first.poll() is None and ready.exists()
    assert "taken over" not in pods.log("first")


def test_a_successor_that_never_serves_leaves_the_old_one_serving(pods: Pods) -> None:
    """A successor takes the sockets and dies before it says ready: the old one never stopped
    reading them, so nothing is lost, and it can be taken over again later."""
    first, ready = pods.start("first")
    assert wait_for(ready.exists, timeout=15), pods.log("first")
    warm(pods.port)
    with Load(pods.port, NAMES, qps=500) as load:
        time.sleep(0.3)
        taken = handover.take_over(pods.control)
        assert taken is not None and len(taken.listeners) == 1
        for udp, tcp in taken.listeners.values():
            udp.close()
            tcp.close()
        for sock in (taken.metrics, taken.control):
            if sock is not None:
                sock.close()
        os.close(taken.ready_fd)  # gone without "ready"
        time.sleep(1.0)
    assert (load.lost, load.wrong) == (0, 0), (load.sent, load.lost, load.wrong)
    assert wait_for(lambda: "takeover failed, still serving" in pods.log("first"), timeout=5)
    assert first.poll() is None and ready.exists()
    assert taken.cache_file is not None and not Path(taken.cache_file).exists()
    _, second_ready = pods.start("second")
    assert wait_for(second_ready.exists, timeout=15), pods.log("second")
    assert wait_for(lambda: not ready.exists(), timeout=5)


def test_a_successor_that_fails_before_ready_leaves_the_old_one_serving(pods: Pods) -> None:
    """The new pod cannot write its ready file (a wrong mount): it fails before it says ready,
    the old one serves on without a lost query, keeps the control path, and a good successor
    takes over afterwards."""
    first, ready = pods.start("first")
    assert wait_for(ready.exists, timeout=15), pods.log("first")
    warm(pods.port)
    with Load(pods.port, NAMES, qps=500) as load:
        time.sleep(0.3)
        bad, _ = pods.start("bad", ready=pods.run_dir / "missing-dir" / "ready")
        assert bad.wait(15) == 1, pods.log("bad")
        time.sleep(0.5)
    assert "no such file or directory" in pods.log("bad").lower(), pods.log("bad")
    assert (load.lost, load.wrong) == (0, 0), (load.sent, load.lost, load.wrong)
    assert wait_for(lambda: "takeover failed, still serving" in pods.log("first"), timeout=5)
    assert first.poll() is None and ready.exists() and Path(pods.control).exists()
    _, second_ready = pods.start("second")
    assert wait_for(second_ready.exists, timeout=15), pods.log("second")
    assert wait_for(lambda: not ready.exists(), timeout=5)


@pytest.fixture
def single_pods(run_dir: RunDir, nsd: NsdServer) -> Iterator[Pods]:
    p = Pods(run_dir.path, hp(nsd))
    try:
        yield p
    finally:
        p.stop_all()


def test_an_upgrade_from_one_process_to_a_keeper_loses_nothing(single_pods: Pods) -> None:
    """The rollout that brings ``keeper: true``: the old pod runs one process, the new a keeper."""
    pods = single_pods
    old, ready = pods.start("old")
    assert wait_for(ready.exists, timeout=15), pods.log("old")
    warm(pods.port)
    with Load(pods.port, NAMES, qps=2000) as load:
        time.sleep(0.3)
        pods.keeper = True
        _, new_ready = pods.start("new")
        assert wait_for(new_ready.exists, timeout=15), pods.log("new")
        assert wait_for(lambda: not ready.exists(), timeout=5), pods.log("old")
        old.send_signal(signal.SIGTERM)
        assert old.wait(10) == 0, pods.log("old")
        time.sleep(1.2)
        assert metric(pods.mport, "netkit_dns_cache_misses_total") == 0
    assert (load.lost, load.wrong) == (0, 0), (load.sent, load.lost, load.wrong)
    assert "worker started" in pods.log("new") and "taking over" in pods.log("new")
