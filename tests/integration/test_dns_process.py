"""``netkit dns serve`` as a real process: --workers with SO_REUSEPORT, SIGHUP reload, SIGTERM,
config errors on the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from labs.dnspeers import NsdServer, Zone
from labs.runid import RunDir, free_port
from tests.conftest import hp
from tests.dnshelpers import answers, wait_for

pytestmark = pytest.mark.peers


def netkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "netkit.cli", *args]


def ask(port: int, name: str, timeout: float = 2.0) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=timeout)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        return r.read().decode()


class Serve:
    def __init__(self, args: list[str], workdir: Path) -> None:
        self.log = (workdir / f"netkit-{time.monotonic_ns()}.log").open("w+")
        self.proc = subprocess.Popen(netkit("dns", "serve", *args), stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for child in children(self.proc.pid):  # belt and braces: only our own children
            os.kill(child, signal.SIGKILL)
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()


@pytest.fixture
def serve(run_dir: RunDir) -> Iterator[callable]:
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        s = Serve(list(args), run_dir.path)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_workers_share_the_port_and_are_restarted(serve, nsd: NsdServer, lab_zone_data: Zone) -> None:
    port, mport = free_port(), free_port()
    s = serve(
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        hp(nsd),
        "--workers",
        "2",
        "--metrics",
        f"127.0.0.1:{mport}",
    )
    assert wait_for(lambda: len(children(s.proc.pid)) == 2, timeout=10), s.output()
    assert wait_for(lambda: _answers(port), timeout=10), s.output()
    sockets = subprocess.run(
        ["ss", "-Hulnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    assert len(sockets.strip().splitlines()) == 2  # one UDP socket per worker, same port (SO_REUSEPORT)
    for i in range(100):  # from many source ports, so both workers get some
        assert answers(ask(port, f"h{i}.example.test")) == lab_zone_data.rdata(f"h{i}")
    time.sleep(1.2)  # the workers report to the supervisor once a second
    text = metrics(mport)
    assert 'netkit_dns_requests_total{proto="udp"}' in text
    udp = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('netkit_dns_requests_total{proto="udp"}')
    )
    assert udp >= 100
    victim = children(s.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(children(s.proc.pid)) == 2 and victim not in children(s.proc.pid), timeout=10)
    assert answers(ask(port, "h1.example.test")) == lab_zone_data.rdata("h1")
    assert s.stop() == 0


def _answers(port: int) -> bool:
    try:
        return ask(port, "h1.example.test", timeout=0.5).rcode() == dns.rcode.NOERROR
    except Exception:
        return False


def test_sighup_reloads_upstreams_without_losing_the_cache(
    serve, nsd: NsdServer, nsd2: NsdServer, run_dir: RunDir
) -> None:
    port = free_port()
    conf = run_dir.path / "dns.yaml"
    conf.write_text(f"listen: ['127.0.0.1:{port}']\nupstream: ['{hp(nsd)}']\n")
    s = serve("--config", str(conf))
    assert wait_for(lambda: _answers(port), timeout=10), s.output()
    ask(port, "h5.example.test")
    conf.write_text(f"listen: ['127.0.0.1:{port}']\nupstream: ['{hp(nsd2)}']\n")
    s.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "configuration reloaded" in s.output(), timeout=5), s.output()
    nsd.stop()  # the old upstream is gone: a miss must go to the new one
    assert ask(port, "h6.example.test").rcode() == dns.rcode.NOERROR
    nsd2.pause()  # now only the cache can answer: the entry from before the reload is still there
    try:
        assert ask(port, "h5.example.test").rcode() == dns.rcode.NOERROR
    finally:
        nsd2.resume()
    conf.write_text("listen: [oops\n")
    s.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in s.output(), timeout=5)
    assert ask(port, "h6.example.test").rcode() == dns.rcode.NOERROR  # still serving the old config
    assert s.stop() == 0


def test_bad_flags_fail_with_a_clear_message(run_dir: RunDir) -> None:
    r = subprocess.run(
        netkit("dns", "serve", "--listen", "127.0.0.1", "--upstream", "127.0.0.1"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2 and "listen: '127.0.0.1': a port is required" in r.stderr
    r = subprocess.run(
        netkit("dns", "serve", "--config", str(run_dir.path / "none.yaml")),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2 and "No such file" in r.stderr


def test_port_in_use_is_reported(run_dir: RunDir, nsd: NsdServer) -> None:
    host, port = nsd.address
    r = subprocess.run(
        netkit("dns", "serve", "--listen", f"{host}:{port}", "--upstream", "127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1 and f"cannot listen on {host}:{port}" in r.stderr


def test_help_teaches() -> None:
    r = subprocess.run(
        netkit("dns", "serve", "--help"), capture_output=True, text=True, timeout=30, check=True
    )
    for words in ("--zone ZONE=ADDR", "serve-stale", "SIGHUP", "/metrics", "Examples:"):
        assert words in r.stdout
