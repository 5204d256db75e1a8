"""An accidental second `netkit dns serve` on the same address gets EADDRINUSE in every mode: with
--workers (SO_REUSEPORT, which Linux would let any process of the same user join) as without,
also across wildcard and specific addresses; the running instance keeps every query. Workers
restarted by the supervisor come back on the same sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from labs.dnspeers import NsdServer
from labs.runid import free_port
from tests.conftest import hp
from tests.dnshelpers import wait_for
from tests.integration.test_dns_process import _answers, children, netkit, serve

pytestmark = pytest.mark.peers
__all__ = ["serve"]  # the fixture


def socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("127.0.0.1", "2"), ("127.0.0.1", "2")),
        (("127.0.0.1", "2"), ("127.0.0.1", "1")),
        (("127.0.0.1", "1"), ("127.0.0.1", "2")),
        (("0.0.0.0", "2"), ("127.0.0.1", "2")),
        (("127.0.0.1", "2"), ("0.0.0.0", "3")),
        (("::1", "2"), ("::1", "2")),
    ],
    ids=["2+2", "2+1", "1+2", "wildcard+2", "2+wildcard", "v6 2+2"],
)
def test_a_second_instance_is_refused_and_the_first_keeps_serving(
    serve, nsd: NsdServer, first: tuple[str, str], second: tuple[str, str]
) -> None:
    port = free_port()

    def listen(host: str) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    running = serve("--listen", listen(first[0]), "--upstream", hp(nsd), "--workers", first[1])
    probe = "::1" if ":" in first[0] else "127.0.0.1"
    if probe == "127.0.0.1":
        assert wait_for(lambda: _answers(port), timeout=10), running.output()
    else:
        time.sleep(2)
    started = time.monotonic()
    res = subprocess.run(
        netkit("dns", "serve", "--listen", listen(second[0]), "--upstream", hp(nsd), "--workers", second[1]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("netkit dns serve: cannot listen on "), res.stderr
    assert "ddress already in use" in lines[0] and "Traceback" not in res.stderr
    assert "by pid" in lines[0] and str(running.proc.pid) in lines[0], lines[0]
    assert time.monotonic() - started < 15
    assert running.proc.poll() is None
    if probe == "127.0.0.1":
        assert all(_answers(port) for _ in range(50))
    assert running.stop() == 0


def test_a_restarted_worker_serves_on_the_supervisors_sockets(serve, nsd: NsdServer) -> None:
    port = free_port()
    s = serve("--listen", f"127.0.0.1:{port}", "--upstream", hp(nsd), "--workers", "2")
    assert wait_for(lambda: len(children(s.proc.pid)) == 2 and _answers(port), timeout=10), s.output()
    before = socket_inodes(s.proc.pid)
    victim = children(s.proc.pid)[0]
    victim_sockets = socket_inodes(victim) & before
    assert victim_sockets, "a worker serves on sockets its supervisor holds"
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(children(s.proc.pid)) == 2 and victim not in children(s.proc.pid), timeout=10)
    assert socket_inodes(s.proc.pid) >= before
    replacement = [c for c in children(s.proc.pid) if socket_inodes(c) & victim_sockets]
    assert replacement and victim not in replacement
    assert all(_answers(port) for _ in range(50))
    assert s.stop() == 0


def test_workers_with_their_metrics_address_taken_exit_1_and_leave_no_worker(nsd: NsdServer) -> None:
    import socket

    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        mport = squatter.getsockname()[1]
        proc = subprocess.Popen(
            netkit("dns", "serve", "--listen", f"127.0.0.1:{port}", "--upstream", hp(nsd), "--workers", "2",
                   "--metrics", f"127.0.0.1:{mport}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _, err = proc.communicate(timeout=20)  # no worker keeps the pipes open
        finally:
            if proc.poll() is None:
                for child in children(proc.pid):
                    os.kill(child, signal.SIGKILL)
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{mport}" in lines[0] and "Traceback" not in err, err
    assert not _answers(port)  # nothing serves the DNS address either
