"""``netkit doctor`` against real faults in a namespace lab: two nodes on an underlay bridge
with a VXLAN tenant network, real BIRD on both, netkit's DNS cache on n1 in front of a real NSD.

Each check's fault is injected for real (an FDB entry deleted, the nft table flushed or edited,
arp_ignore reset by sysctl, an underlay MTU lowered on the path, a BIRD peer killed, a BGP route
deleted from the FIB, the cache SIGSTOPped, its address removed, its upstream stopped, conntrack
filled by a bounded burst in an own namespace); the test sees the condition's reason, the repair
(or the escalation: no safe repair) and the condition clear.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgp.core.model import NodeInfo, Session, Timers, speaker_configs
from labs.bgpspeakers import BirdSpeaker, wait_for
from labs.chaos.lab import NsNsd
from labs.dnspeers import generate_zone
from labs.l2lab import L2Lab
from labs.runid import RunDir
from netkit.base.netns import netns_exec
from netkit.base.process import ManagedProcess
from netkit.l2.core.state import bridge_name, vxlan_name

pytestmark = [pytest.mark.root, pytest.mark.peers]

NODE_LOCAL = "169.254.20.10"
UPSTREAM = "198.18.0.200"
VX, BR = vxlan_name(100), bridge_name("blue")


@dataclass
class DoctorLab:
    lab: L2Lab
    dir: Path
    networks: str  # the networks file
    cache: ManagedProcess
    pid_file: Path
    nsd: NsNsd
    birds: dict[str, BirdSpeaker]
    cfgs: dict[str, Any]

    def ns(self, node: str) -> str:
        return self.lab.ns(node)

    def sh(self, node: str, *argv: str) -> str:
        r = subprocess.run(netns_exec(self.ns(node), argv), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{argv}: {r.stderr}"
        return r.stdout

    def doctor(self, *args: str, node: str = "n1") -> tuple[int, dict[str, dict[str, Any]]]:
        argv = [sys.executable, "-m", "netkit.cli", "doctor", "--node", node, "--netns", self.ns(node)]
        argv += [*args, "-o", "json", "--log-level", "error"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode in (0, 3), f"exit {r.returncode}: {r.stderr}"
        return r.returncode, {c["check"]: c for c in json.loads(r.stdout)["checks"]}

    def l2(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        return self.doctor("--networks", self.networks, *args)

    def dns(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        return self.doctor(
            "--dns",
            f"{NODE_LOCAL}:53",
            "--dns-metrics",
            f"{NODE_LOCAL}:9253",
            "--dns-interface",
            "lo",
            "--dns-pid-file",
            str(self.pid_file),
            "--kubelet-config",
            str(self.dir / "kubelet.yaml"),
            *args,
        )


def _cache_answers(ns: str) -> bool:
    from netkit.base.addr import HostPort
    from netkit.doctor.checks.dns import query

    return query(ns, HostPort(NODE_LOCAL, 53), "h1.cluster.local.", 0.5)


@pytest.fixture(scope="module")
def dl() -> Iterator[DoctorLab]:
    if os.geteuid() != 0:
        pytest.fail("the doctor tests need root (network namespaces); the suite runs as root")
    with L2Lab(nodes=2) as lab, RunDir(lab.run_id) as rd:
        lab.add_blue_pods()
        text = yaml.safe_dump({"networks": [lab.blue()]})
        nets_file = rd.path / "networks.yaml"
        nets_file.write_text(text)
        lab.apply(text)
        # DNS: NSD on the underlay, netkit's cache on n1 at the link-local address on lo
        host = lab.add_host("up", UPSTREAM)
        zones = [generate_zone("cluster.local.", 20, ttl=1)]
        nsd = NsNsd(host, zones, (UPSTREAM, 53), rd.path / "nsd").start()
        sh = ["ip", "addr", "add", f"{NODE_LOCAL}/32", "dev", "lo"]
        subprocess.run(netns_exec(lab.ns("n1"), sh), check=True)
        (rd.path / "kubelet.yaml").write_text(
            yaml.safe_dump({"kind": "KubeletConfiguration", "clusterDNS": [NODE_LOCAL]})
        )
        argv = [sys.executable, "-m", "netkit.cli", "dns", "serve", "--listen", f"{NODE_LOCAL}:53"]
        argv += ["--upstream", f"{UPSTREAM}:53", "--metrics", f"{NODE_LOCAL}:9253", "--max-fails", "2"]
        argv += [
            "--stale-window",
            "600",
            "--prefetch",
            "false",
            "--failure-recheck",
            "1",
            "--log-level",
            "warning",
        ]
        cache = ManagedProcess(argv, rd.path / "cache.log", netns=lab.ns("n1"))
        pid_file = rd.path / "cache.pid"
        pid_file.write_text(str(cache.pid))
        # BGP: BIRD on both nodes, one session, each originating its pod prefix
        infos = [
            NodeInfo(n, lab.vtep[n], 64512, lab.vtep[n], (f"198.19.{10 + i}.0/24",))
            for i, n in enumerate(lab.node_ns, 1)
        ]
        cfgs = speaker_configs(infos, [Session.peer("n1", "n2")], {}, timers=Timers.lab())
        birds = {n: BirdSpeaker(lab.ns(n), rd.path, cfgs[n]).start() for n in lab.node_ns}
        try:
            wait_for(lambda: _cache_answers(lab.ns("n1")), 20, "the cache answers")
            for b in birds.values():
                b.wait_established()
            wait_for(lambda: "198.19.12.0/24" in birds["n1"].routes(), 20, "n1 learns n2's prefix")
            yield DoctorLab(lab, rd.path, str(nets_file), cache, pid_file, nsd, birds, cfgs)
        finally:
            for b in birds.values():
                b.stop()
            cache.stop()
            nsd.stop()
    assert lab.leftovers() == []


def test_a_healthy_node_has_no_problem(dl: DoctorLab) -> None:
    code, checks = dl.l2()
    assert code == 0, checks
    assert {c: v["status"] for c, v in checks.items()} == {
        "l2-drift": "ok",
        "l2-bridge-arp": "ok",
        "l2-underlay-filter": "ok",
        "l2-overlay-mtu": "ok",
        "conntrack": "ok",
    }


def test_fdb_entry_deleted_is_found_and_repaired(dl: DoctorLab) -> None:
    dl.sh("n1", "bridge", "fdb", "del", "00:00:00:00:00:00", "dev", VX, "dst", dl.lab.vtep["n2"])
    code, checks = dl.l2("--only", "l2-drift")
    d = checks["l2-drift"]
    assert code == 3 and d["status"] == "problem" and d["reason"] == "FdbDrift", d
    assert any(dl.lab.vtep["n2"] in e for e in d["evidence"]), d
    assert d["repair"]["applied"] is False and "--fix" in d["repair"]["decision"]
    code, checks = dl.l2("--only", "l2-drift", "--fix")
    d = checks["l2-drift"]
    assert code == 0 and d["found"] == "problem" and d["status"] == "ok" and d["repair"]["applied"], d
    assert dl.lab.ping("pa", "198.19.1.2")
    assert dl.l2("--only", "l2-drift")[0] == 0


def test_dry_run_changes_nothing(dl: DoctorLab) -> None:
    dl.sh("n1", "bridge", "fdb", "del", "00:00:00:00:00:00", "dev", VX, "dst", dl.lab.vtep["n2"])
    code, checks = dl.l2("--only", "l2-drift", "--fix", "--dry-run")
    assert code == 3 and checks["l2-drift"]["repair"]["decision"] == "dry run"
    assert dl.l2("--only", "l2-drift")[0] == 3  # still there
    assert dl.l2("--only", "l2-drift", "--fix")[0] == 0


def test_underlay_filter_flushed_or_edited_is_reloaded(dl: DoctorLab) -> None:
    dl.sh("n1", "nft", "delete", "table", "inet", "netkit_l2")
    code, checks = dl.l2("--only", "l2-underlay-filter")
    assert code == 3 and checks["l2-underlay-filter"]["reason"] == "FilterMissing"
    assert dl.l2("--only", "l2-underlay-filter", "--fix")[0] == 0
    dl.sh("n1", "nft", "flush", "chain", "inet", "netkit_l2", "vni_100")  # the allow rule and the drop gone
    code, checks = dl.l2("--only", "l2-underlay-filter")
    f = checks["l2-underlay-filter"]
    assert code == 3 and f["reason"] == "FilterEdited", f
    assert any(e.startswith("- ip saddr") for e in f["evidence"]) and "- drop" in f["evidence"]
    code, checks = dl.l2("--only", "l2-underlay-filter", "--fix")
    assert code == 0 and checks["l2-underlay-filter"]["found"] == "problem"
    assert "drop" in dl.sh("n1", "nft", "list", "chain", "inet", "netkit_l2", "vni_100")


def test_bridge_arp_ignore_reset_is_set_back(dl: DoctorLab) -> None:
    dl.sh("n1", "sysctl", "-qw", f"net.ipv4.conf.{BR}.arp_ignore=0")
    code, checks = dl.l2("--only", "l2-bridge-arp", "--only", "l2-drift")
    a = checks["l2-bridge-arp"]
    assert code == 3 and a["reason"] == "BridgeAnswersARP" and BR in a["message"], a
    assert checks["l2-drift"]["status"] == "ok"  # the sysctl is this check's alone
    assert dl.l2("--only", "l2-bridge-arp", "--fix")[0] == 0
    assert dl.sh("n1", "sysctl", "-n", f"net.ipv4.conf.{BR}.arp_ignore").strip() == "8"


def test_underlay_mtu_lowered_on_the_path_is_found_by_df_probes(dl: DoctorLab) -> None:
    fabric_port = f"{dl.lab.run_id}-f2"  # the bridge port towards n2: frames over 1400 dropped
    subprocess.run(netns_exec(dl.lab.fabric, ["ip", "link", "set", fabric_port, "mtu", "1400"]), check=True)
    try:
        code, checks = dl.l2("--only", "l2-overlay-mtu", "--fix")
        m = checks["l2-overlay-mtu"]
        assert code == 3 and m["reason"] == "PathMTUTooSmall", m
        assert any("carries 1400 bytes, the overlay needs 1500" in e for e in m["evidence"]), m
        assert "repair" not in m and "mtu" in m["suggestion"]  # no safe repair: escalated to a person
    finally:
        subprocess.run(
            netns_exec(dl.lab.fabric, ["ip", "link", "set", fabric_port, "mtu", "1500"]), check=True
        )
    assert dl.l2("--only", "l2-overlay-mtu")[0] == 0


def test_desired_state_unreadable_is_an_error_not_nothing(dl: DoctorLab, tmp_path: Path) -> None:
    bad = tmp_path / "networks.yaml"
    bad.write_text("networks: [{name: blue, vni: 99999999}]\n")
    argv = [sys.executable, "-m", "netkit.cli", "doctor", "--node", "n1", "--netns", dl.ns("n1")]
    r = subprocess.run([*argv, "--networks", str(bad), "--fix"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "vni" in r.stderr
    r = subprocess.run(
        [*argv, "--networks", str(tmp_path / "absent.yaml"), "--fix"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "cannot read" in r.stderr
    assert dl.l2()[0] == 0  # nothing was removed


# -- BGP ---------------------------------------------------------------------------------------


def test_bgp_peer_killed_then_back(dl: DoctorLab) -> None:
    bird = ["--bird-socket", str(dl.birds["n1"].ctl_path), "--only", "bgp-sessions", "--only", "bgp-fib"]
    code, checks = dl.doctor(*bird)
    assert code == 0 and checks["bgp-sessions"]["status"] == "ok" and checks["bgp-fib"]["status"] == "ok", (
        checks
    )
    dl.birds["n2"].kill()
    try:
        wait_for(
            lambda: dl.doctor(*bird)[1]["bgp-sessions"]["reason"] == "SessionDown",
            Timers.lab().hold + 10,
            "down",
        )
        s = dl.doctor(*bird)[1]["bgp-sessions"]
        assert dl.lab.vtep["n2"] in s["message"] and "repair" not in s
    finally:
        dl.birds["n2"] = BirdSpeaker(dl.ns("n2"), dl.dir, dl.cfgs["n2"]).start()
    wait_for(lambda: dl.doctor(*bird)[0] == 0, 30, "the session and its routes back")


def test_bgp_route_deleted_from_the_fib(dl: DoctorLab) -> None:
    bird = ["--bird-socket", str(dl.birds["n1"].ctl_path), "--only", "bgp-fib"]
    wait_for(lambda: dl.doctor(*bird)[0] == 0, 30, "the FIB complete")
    dl.sh("n1", "ip", "route", "del", "198.19.12.0/24")
    code, checks = dl.doctor(*bird, "--fix")
    assert code == 0
    f = checks["bgp-fib"]
    assert f["found"] == "problem" and f["evidence"][0].startswith("198.19.12.0/24"), f
    assert f["status"] == "ok" and f["repair"]["applied"], f  # BIRD re-exported it to the kernel
    assert "198.19.12.0/24" in dl.sh("n1", "ip", "route", "show", "198.19.12.0/24")


# -- DNS ---------------------------------------------------------------------------------------


def test_dns_cache_healthy(dl: DoctorLab) -> None:
    code, checks = dl.dns("--only", "dns-answering", "--only", "dns-address", "--only", "dns-clients")
    assert code == 0, checks
    assert checks["dns-clients"]["status"] == "ok"


def test_dns_cache_stopped_is_resumed(dl: DoctorLab) -> None:
    dl.cache.signal_leader(signal.SIGSTOP)
    try:
        code, checks = dl.dns("--only", "dns-answering")
        a = checks["dns-answering"]
        assert code == 3 and a["reason"] == "CacheNotAnswering", a
        assert f"pid {dl.cache.pid} state T" in a["evidence"]
        code, checks = dl.dns("--only", "dns-answering", "--fix")
        a = checks["dns-answering"]
        assert code == 0 and a["found"] == "problem" and a["repair"]["applied"], a
    finally:
        dl.cache.signal_leader(signal.SIGCONT)
    assert _cache_answers(dl.ns("n1"))


def test_dns_link_local_address_removed_is_added_back(dl: DoctorLab) -> None:
    dl.sh("n1", "ip", "addr", "del", f"{NODE_LOCAL}/32", "dev", "lo")
    try:
        code, checks = dl.dns("--only", "dns-address")
        assert code == 3 and checks["dns-address"]["reason"] == "AddressMissing"
        code, checks = dl.dns("--only", "dns-address", "--fix")
        assert code == 0 and checks["dns-address"]["repair"]["applied"]
    finally:
        subprocess.run(
            netns_exec(dl.ns("n1"), ["ip", "addr", "replace", f"{NODE_LOCAL}/32", "dev", "lo"]), check=True
        )
    wait_for(lambda: _cache_answers(dl.ns("n1")), 10, "the cache answers again")


def test_dns_kubelet_not_pointing_at_the_cache(dl: DoctorLab, tmp_path: Path) -> None:
    kubelet = tmp_path / "kubelet.yaml"
    kubelet.write_text(yaml.safe_dump({"clusterDNS": ["10.96.0.10"]}))
    resolv = tmp_path / "pod-resolv.conf"
    resolv.write_text("search default.svc.cluster.local\nnameserver 10.96.0.10\n")
    code, checks = dl.dns(
        "--only", "dns-clients", "--kubelet-config", str(kubelet), "--resolv-conf", str(resolv)
    )
    c = checks["dns-clients"]
    assert code == 3 and c["reason"] == "KubeletBypassesCache", c
    assert any(str(resolv) in e for e in c["evidence"])


def test_dns_upstream_stopped_all_down_and_serving_stale(dl: DoctorLab) -> None:
    assert _cache_answers(dl.ns("n1"))  # h1 cached (TTL 1 s)
    dl.nsd.pause()
    try:
        time.sleep(1.5)  # h1 expires

        def stale_and_down() -> bool:
            _cache_answers(dl.ns("n1"))  # answered from stale; the refresh fails
            checks = dl.dns("--only", "dns-upstreams", "--only", "dns-serve-stale")[1]
            return checks["dns-upstreams"]["reason"] == "AllUpstreamsDown"

        wait_for(stale_and_down, 20, "the upstream marked down")
        # the stale check compares two scrapes: run it in one process, twice (as the agent does)
        from netkit.base.addr import HostPort
        from netkit.doctor.checks.dns import DnsStaleCheck, DnsTarget

        target = DnsTarget(lambda: [HostPort(NODE_LOCAL, 53)], dl.ns("n1"), HostPort(NODE_LOCAL, 9253))
        check = DnsStaleCheck(target)
        assert check.observe().status == "ok"  # the first scrape is the baseline
        assert _cache_answers(dl.ns("n1"))
        f = check.observe()
        assert f.status == "problem" and f.reason == "ServingStale", f
    finally:
        dl.nsd.resume()
    wait_for(lambda: dl.dns("--only", "dns-upstreams")[0] == 0, 30, "the upstream back in service")


# -- node --------------------------------------------------------------------------------------


def test_conntrack_filled_by_a_bounded_burst(dl: DoctorLab) -> None:
    ns = dl.lab.add_sandbox("ct")
    name = os.path.basename(ns)
    rules = "table inet nkct {\n chain out {\n type filter hook output priority 0; ct state new counter\n"
    rules += " }\n}\n"
    subprocess.run(netns_exec(name, ["nft", "-f", "-"]), input=rules, text=True, check=True)

    def burst() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for port in range(20000, 22000):  # 2,000 flows to the namespace's own loopback
                s.sendto(b"x", ("127.0.0.1", port))

    from netkit.base.netns import in_netns

    in_netns(name, burst)
    argv = [sys.executable, "-m", "netkit.cli", "doctor", "--node", "ct", "--netns", name, "-o", "json"]
    r = subprocess.run([*argv, "--conntrack-threshold", "0.005"], capture_output=True, text=True, timeout=60)
    assert r.stdout, r.stderr
    c = json.loads(r.stdout)["checks"][0]
    assert r.returncode == 3 and c["reason"] == "ConntrackNearFull" and c["facts"]["entries"] >= 2000, c
    subprocess.run(
        netns_exec(name, ["sh", "-c", "echo 1 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout"]),
        check=False,
    )
    subprocess.run(netns_exec(name, ["nft", "delete", "table", "inet", "nkct"]), check=True)
    r = subprocess.run([*argv, "--conntrack-threshold", "0.9"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_api_server_unreachable(dl: DoctorLab, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        argv = [
            sys.executable,
            "-m",
            "netkit.cli",
            "doctor",
            "--kubeconfig",
            str(kubeconfig),
            "--only",
            "api-server",
        ]
        r = subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=60)
    c = json.loads(r.stdout)["checks"][0]
    assert r.returncode == 3 and c["reason"] == "APIServerUnreachable", c
