"""Real DNS daemons as lab peers: NSD, Knot, Unbound and dnsmasq on loopback high ports.

These tests need the Debian packages nsd, knot, unbound and dnsmasq (``make setup``); a missing
binary fails the test with an install hint, it never skips.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from labs.dnspeers import (
    DaemonError,
    DnsDaemon,
    Dnsmasq,
    KnotServer,
    NsdServer,
    UnboundForwarder,
    Zone,
    generate_zone,
    live_group_members,
    require_binary,
    zone_text,
)
from labs.runid import free_port, new_run_id

pytestmark = pytest.mark.peers

ORIGIN = "example.test."


def a_records(response: dns.message.Message, qname: str) -> list[str]:
    rrset = response.get_rrset(response.answer, dns.name.from_text(qname), 1, dns.rdatatype.A)
    return sorted(r.to_text() for r in rrset) if rrset is not None else []


def assert_gone(pid: int) -> None:
    """Neither the daemon nor any process of its group exists any more."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert live_group_members(pid) == []  # no worker left (zombies awaiting init do not count)


@pytest.fixture(scope="module")
def zone() -> Zone:
    return generate_zone(ORIGIN, 100, seed=7)


@pytest.fixture
def nsd(zone: Zone, tmp_path: Path) -> Iterator[NsdServer]:
    with NsdServer([zone], listen=("127.0.0.1", free_port()), workdir=tmp_path) as server:
        yield server


@pytest.fixture(params=[NsdServer, KnotServer], ids=["nsd", "knot"])
def authoritative(request: pytest.FixtureRequest, zone: Zone, tmp_path: Path) -> Iterator[DnsDaemon]:
    cls = request.param
    with cls([zone], listen=("127.0.0.1", free_port()), workdir=tmp_path) as server:
        yield server


# -- pure helpers -----------------------------------------------------------------------------


def test_run_id_and_free_port() -> None:
    rid = new_run_id()
    assert len(rid) == 6 and rid.startswith("nk")
    int(rid[2:], 16)
    assert 1024 <= free_port() <= 65535


def test_generate_zone_is_deterministic_and_in_lab_ranges(zone: Zone) -> None:
    assert zone_text(zone) == zone_text(generate_zone(ORIGIN, 100, seed=7))
    assert zone_text(zone) != zone_text(generate_zone(ORIGIN, 100, seed=8))
    assert len(zone.names("A")) == 101  # h0..h99 and ns1
    assert zone.names("AAAA")
    lab4, lab6 = ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")
    for r in zone.records:
        if r.rtype == "A":
            assert ipaddress.ip_address(r.rdata) in lab4
        elif r.rtype == "AAAA":
            assert ipaddress.ip_address(r.rdata) in lab6
    soa = [r for r in zone.records if r.rtype == "SOA"]
    assert len(soa) == 1 and soa[0].rdata.split()[-1] == "60"


def test_require_binary_fails_loudly_with_install_hint() -> None:
    assert require_binary("nsd").endswith("/nsd")
    with pytest.raises(RuntimeError, match=r"not installed: run `make setup` \(apt package nk-none\)"):
        require_binary("nk-no-such-daemon", package="nk-none")


# -- authoritative servers ----------------------------------------------------------------------


def test_authoritative_answers_a_and_nxdomain(authoritative: DnsDaemon, zone: Zone) -> None:
    r = authoritative.query("h1." + ORIGIN)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert a_records(r, "h1." + ORIGIN) == zone.rdata("h1") != []

    r = authoritative.query("h1." + ORIGIN, tcp=True)
    assert a_records(r, "h1." + ORIGIN) == zone.rdata("h1")

    r = authoritative.query("no-such-name." + ORIGIN)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert not r.answer
    soa = [rrset for rrset in r.authority if rrset.rdtype == dns.rdatatype.SOA]
    assert len(soa) == 1 and soa[0].name.to_text() == ORIGIN
    assert soa[0].ttl == 60 and soa[0][0].minimum == 60  # type: ignore[attr-defined]


def test_files_live_in_the_daemon_workdir(authoritative: DnsDaemon, tmp_path: Path) -> None:
    assert authoritative.workdir.parent == tmp_path
    assert authoritative.output_path.exists()
    assert any(p.name.endswith(".conf") for p in authoritative.workdir.iterdir())


def test_second_server_on_a_taken_port_is_refused(nsd: NsdServer, zone: Zone, tmp_path: Path) -> None:
    other = NsdServer([zone], listen=nsd.address, workdir=tmp_path / "other")
    with pytest.raises(DaemonError, match=r"nsd on 127\.0\.0\.1:\d+: UDP .* already in use"):
        other.start()
    assert other.pid is None and not other.running
    assert a_records(nsd.query("h2." + ORIGIN), "h2." + ORIGIN) == zone.rdata("h2")


def test_failed_start_reports_the_daemon_log(nsd: NsdServer, tmp_path: Path) -> None:
    bad = UnboundForwarder([nsd.address], [ORIGIN], workdir=tmp_path, extra={"nk-no-such-option": 1})
    with pytest.raises(DaemonError, match=r"(?s)exited with status \d+.*nk-no-such-option"):
        bad.start()
    assert bad.pid is None and not bad.running


# -- forwarders ---------------------------------------------------------------------------------


def test_unbound_forwards_to_nsd_and_caches(nsd: NsdServer, zone: Zone, tmp_path: Path) -> None:
    with UnboundForwarder(
        [nsd.address],
        [ORIGIN],
        listen=("127.0.0.1", free_port()),
        workdir=tmp_path,
        extra={"serve-expired": True, "prefetch": True, "msg-cache-size": "8m", "rrset-cache-size": "16m"},
    ) as unbound:
        r = unbound.query("h1." + ORIGIN)
        assert r.rcode() == dns.rcode.NOERROR
        assert not r.flags & dns.flags.AA
        assert a_records(r, "h1." + ORIGIN) == zone.rdata("h1")
        assert unbound.query("no-such-name." + ORIGIN).rcode() == dns.rcode.NXDOMAIN

        nsd.pause()  # upstream silent: the cached answer still comes back
        try:
            assert a_records(unbound.query("h1." + ORIGIN), "h1." + ORIGIN) == zone.rdata("h1")
        finally:
            nsd.resume()


def test_dnsmasq_forwards_to_nsd(nsd: NsdServer, zone: Zone, tmp_path: Path) -> None:
    with Dnsmasq([nsd.address], listen=("127.0.0.1", free_port()), workdir=tmp_path, cache_size=1000) as dm:
        r = dm.query("h3." + ORIGIN)
        assert r.rcode() == dns.rcode.NOERROR
        assert a_records(r, "h3." + ORIGIN) == zone.rdata("h3")
        assert dm.query("no-such-name." + ORIGIN).rcode() == dns.rcode.NXDOMAIN


# -- lifecycle ----------------------------------------------------------------------------------


def test_pause_makes_nsd_silent_and_resume_brings_it_back(nsd: NsdServer, zone: Zone) -> None:
    nsd.pause()
    assert nsd.paused
    with pytest.raises(dns.exception.Timeout):
        nsd.query("h4." + ORIGIN, timeout=0.5)
    nsd.resume()
    assert a_records(nsd.query("h4." + ORIGIN), "h4." + ORIGIN) == zone.rdata("h4")


def test_kill_then_restart(authoritative: DnsDaemon, zone: Zone) -> None:
    pid = authoritative.pid
    assert pid is not None
    authoritative.kill()
    assert_gone(pid)
    with pytest.raises(dns.exception.Timeout):
        authoritative.query("h5." + ORIGIN, timeout=0.3)
    authoritative.restart()
    assert authoritative.pid not in (None, pid)
    assert a_records(authoritative.query("h5." + ORIGIN), "h5." + ORIGIN) == zone.rdata("h5")


Factory = Callable[[Path, NsdServer], DnsDaemon]
FACTORIES: dict[str, Factory] = {
    "nsd": lambda d, up: NsdServer(up.zones, workdir=d),
    "knot": lambda d, up: KnotServer(up.zones, workdir=d),
    "unbound": lambda d, up: UnboundForwarder([up.address], [ORIGIN], workdir=d),
    "dnsmasq": lambda d, up: Dnsmasq([up.address], workdir=d),
}


@pytest.mark.parametrize("kind", FACTORIES)
def test_stop_leaves_no_process_even_when_paused(kind: str, nsd: NsdServer, tmp_path: Path) -> None:
    daemon = FACTORIES[kind](tmp_path / "d", nsd)
    with daemon:
        pid = daemon.pid
        assert pid is not None
        os.kill(pid, 0)
        daemon.pause()
        daemon.stop()
        assert daemon.pid is None and not daemon.running
        assert_gone(pid)
        daemon.stop()  # idempotent
    assert_gone(pid)
