"""``netkit dns demo``: the cache on its embedded default (a resolv.conf), in front of real
upstreams on loopback, answering and failing over while the upstreams die (effects).

Everything runs on 127.0.0.1 with free high ports and lives in one temp dir that is removed at
the end; every process started is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from labs.dnspeers import NsdServer, Record, UnboundForwarder, generate_zone
from labs.runid import RunDir, free_port
from netkit.base.process import ManagedProcess


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


def ask(
    server: tuple[str, int], name: str, rdtype: str = "A", timeout: float = 3.0
) -> tuple[str, float, str]:
    q = dns.message.make_query(name, rdtype)
    t0 = time.monotonic()
    try:
        r = dns.query.udp(q, server[0], port=server[1], timeout=timeout)
    except dns.exception.Timeout:
        return "TIMEOUT", time.monotonic() - t0, ""
    ms = time.monotonic() - t0
    data = ", ".join(f"{rr.ttl}s {rd}" for rr in r.answer for rd in rr)
    return dns.rcode.to_text(r.rcode()), ms, data


def show(server: tuple[str, int], name: str, note: str = "") -> str:
    rcode, seconds, data = ask(server, name)
    say(f"   {name:<24} {rcode:<9} {seconds * 1000:7.1f} ms  {data:<34} {note}")
    return rcode


def upstream_health(mport: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=3) as r:
        text = r.read().decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(("netkit_dns_upstream_healthy", "netkit_dns_served_stale"))
    ]


@contextlib.contextmanager
def netkit_serve(args: list[str], log: Path) -> Iterator[ManagedProcess]:
    proc = ManagedProcess([sys.executable, "-m", "netkit.cli", "dns", "serve", *args], log)
    try:
        yield proc
    finally:
        proc.stop(10.0, group=False)


def wait_until_answering(server: tuple[str, int], proc: ManagedProcess, log: Path) -> None:
    for _ in range(100):
        if proc.returncode is not None:
            raise RuntimeError(f"netkit dns serve exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(Exception):
            if ask(server, "h0.demo.test", timeout=0.2)[0] == "NOERROR":
                return
        time.sleep(0.1)
    raise RuntimeError(f"netkit dns serve did not answer:\n{log.read_text()}")


def run_demo(names: int = 200) -> int:
    zone = generate_zone("demo.test", names, seed=1, ttl=300, negative_ttl=30)
    zone.records.append(Record("short", "A", "198.18.99.1", ttl=2))
    with RunDir() as rd:
        # A loopback /24 of its own (127.R.R.0/24) lets this run use port 53, as resolv.conf
        # nameservers must, without colliding with another run or the host's resolver.
        net = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
        step(f"real upstreams on {net}.0/24: NSD (authoritative demo.test) behind two Unbound resolvers")
        with (
            NsdServer([zone], workdir=rd.path) as nsd,
            UnboundForwarder(
                [nsd.address], zones=("demo.test",), listen=(f"{net}.2", 53), workdir=rd.path
            ) as up1,
            UnboundForwarder(
                [nsd.address], zones=("demo.test",), listen=(f"{net}.3", 53), workdir=rd.path
            ) as up2,
        ):
            for label, server in (("nsd", nsd), ("unbound-1", up1), ("unbound-2", up2)):
                say(f"   {label:<10} {server.address[0]}:{server.address[1]}  pid {server.pid}")
            resolv = rd.path / "resolv.conf"
            resolv.write_text(f"nameserver {up1.address[0]}\nnameserver {up2.address[0]}\noptions ndots:5\n")
            say(f"   {resolv}: " + resolv.read_text().replace("\n", "; "))
            port, mport = 53, free_port()
            args = [
                "--listen",
                f"{net}.1:{port}",
                "--resolv-conf",
                str(resolv),
                "--metrics",
                f"127.0.0.1:{mport}",
                "--stale-answer-timeout",
                "0.3",
                "--failure-recheck",
                "5",
            ]
            step("the embedded default: no --upstream, so the nameservers of resolv.conf")
            say(f"   netkit dns serve {' '.join(args)}")
            log = rd.path / "netkit.log"
            cache = (f"{net}.1", port)
            with netkit_serve(args, log) as proc:
                wait_until_answering(cache, proc, log)
                step("1. answering: a miss goes upstream, the repeat is a cache hit with a smaller TTL")
                show(cache, "h1.demo.test", "miss")
                show(cache, "h1.demo.test", "hit")
                show(cache, "short.demo.test", "miss (TTL 2)")
                show(cache, "nothere.demo.test", "negative, cached for the SOA minimum")
                for i in range(2, 40):
                    ask(cache, f"h{i}.demo.test")
                say("   (h2..h39 cached too)")

                step(f"2. failover: SIGKILL unbound-1 (pid {up1.pid}); queries keep resolving")
                up1.kill()
                ok = sum(show(cache, f"h{i}.demo.test", "") == "NOERROR" for i in range(40, 46))
                for i in range(46, 80):
                    ok += ask(cache, f"h{i}.demo.test")[0] == "NOERROR"
                say(f"   {ok}/40 fresh names resolved with one upstream dead")
                time.sleep(0.5)
                for line in upstream_health(mport):
                    say(f"   {line}")

                step(
                    f"3. every upstream down: SIGSTOP unbound-2 (pid {up2.pid});"
                    " the cache serves stale (RFC 8767)"
                )
                up2.pause()
                time.sleep(2.2)  # short.demo.test has expired by now
                show(cache, "short.demo.test", "expired: served stale, TTL 30")
                show(cache, "h5.demo.test", "still fresh: a plain hit")
                show(cache, "h999.demo.test", "never seen: nothing to serve")
                for line in upstream_health(mport):
                    say(f"   {line}")

                step("4. recovery: SIGCONT unbound-2, restart unbound-1; probes bring them back")
                up2.resume()
                up1.start()
                time.sleep(6)
                show(cache, "h80.demo.test", "a new name resolves again")
                for line in upstream_health(mport):
                    say(f"   {line}")
            step("done: every process stopped, temp dir removed")
    return 0
