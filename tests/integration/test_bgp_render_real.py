"""Every renderer against the real tool.

- BIRD 2 (``bird -p``), FRR (``bgpd --dryrun``, every line accepted) and GoBGP (``gobgpd
  --dry-run``) accept every config of a zoo: reflector, client, IPv4 and IPv6 sessions, IPv4 and
  IPv6 prefixes, TCP-MD5 passwords, sessions on alternate addresses, no kernel routes, eBGP.
- FRR and GoBGP started with rendered configs reach Established with a BIRD reflector, with
  TCP-MD5 on every session and a second session on alternate addresses; the paths they
  originate carry their main address as next hop on both sessions; and the same over IPv6
  sessions, where BIRD and FRR put the learnt IPv6 prefixes in the kernel.
- ``frr_delta`` applied through vtysh leaves bgpd with exactly the running configuration a bgpd
  started from the target config has, for adding/removing neighbours, flipping
  route-reflector-client, cluster id, prefixes, timers, passwords, FIB installation and
  alternate sessions.
- Calico resources validate against the CRD OpenAPI schemas of Calico itself (tests/data/calico).

Binaries missing fail the tests (``make setup`` installs them); nothing is skipped.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bgp.core.inventory import Inventory, Policy
from bgp.core.inventory import Node as InvNode
from bgp.core.model import NodeInfo, Session, SpeakerConfig, Timers, speaker_configs
from bgp.core.planner import plan, speakers_for
from bgp.core.render.bird import render_bird
from bgp.core.render.calico import calico_yaml, render_calico
from bgp.core.render.frr import frr_delta, render_frr
from bgp.core.render.gobgp import render_gobgp
from labs.bgpspeakers import (
    BgpSpeaker,
    BirdSpeaker,
    FrrSpeaker,
    GoBgpSpeaker,
    check_bird_config,
    check_frr_config,
    check_gobgp_config,
    wait_for,
)
from labs.dnspeers import DaemonError
from labs.l2lab import L2Lab

PEERS = pytest.mark.peers  # needs bird2, frr, gobgpd
ROOT = pytest.mark.root  # needs network namespaces

ASN = 64512
CLUSTER = {"n1": "1.1.1.1", "n2": "2.2.2.2"}


def v4node(i: int) -> NodeInfo:
    return NodeInfo(
        f"n{i}",
        f"198.18.0.{i}",
        ASN,
        f"198.18.0.{i}",
        (f"198.19.{i}.0/24", f"2001:db8:{i}::/48"),
        alt_address=f"198.18.1.{i}",
    )


def v6node(i: int) -> NodeInfo:
    return NodeInfo(
        f"n{i}", f"2001:db8:ff::{i}", ASN, f"198.18.0.{i}", (f"2001:db8:{i}::/48", f"198.19.{i}.0/24")
    )


def zoo() -> dict[str, SpeakerConfig]:
    """Configs covering every branch of the renderers."""
    v4 = [v4node(i) for i in (1, 2, 3, 4)]
    sessions = [
        Session.peer("n1", "n2"),
        Session.rr("n1", "n3"),
        Session.rr("n2", "n3"),
        Session.rr("n1", "n4"),
        Session.rr("n1", "n4", alt=True),
    ]
    pw = {frozenset(("n1", "n3")): "s3cret pass", frozenset(("n1", "n4")): "b@ck\\slash"}
    lab = speaker_configs(v4, sessions, CLUSTER, timers=Timers.lab(), passwords=pw)
    prod = speaker_configs(v4, sessions, {}, install_routes=False)
    v6 = speaker_configs(
        [v6node(i) for i in (1, 2, 3)], [Session.rr("n1", "n2"), Session.peer("n1", "n3")], {}
    )
    ebgp_nodes = [v4[0], replace(v4[1], asn=65001)]
    ebgp = speaker_configs(ebgp_nodes, [Session.peer("n1", "n2")], {})
    return {
        "reflector": lab["n1"],
        "second-reflector": lab["n2"],
        "client-of-two": lab["n3"],
        "client-alt-password": lab["n4"],
        "reflector-no-fib-default-timers": prod["n1"],
        "client-no-fib": prod["n4"],
        "v6-reflector": v6["n1"],
        "v6-client": v6["n2"],
        "ebgp": ebgp["n1"],
        "no-neighbours": replace(lab["n1"], neighbors=(), cluster_id=None),
    }


ZOO = zoo()


TOOLS = {  # file name, renderer, the tool's own check
    "bird": ("bird.conf", render_bird, check_bird_config),
    "frr": ("frr.conf", render_frr, check_frr_config),
    "gobgp": ("gobgpd.toml", render_gobgp, check_gobgp_config),
}


@PEERS
@pytest.mark.parametrize("tool", sorted(TOOLS))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_tool_parses_every_rendered_config(tool: str, name: str, tmp_path: Path) -> None:
    filename, render, check = TOOLS[tool]
    path = tmp_path / filename
    path.write_text(render(ZOO[name]))
    check(path)


@PEERS
def test_checkers_reject_broken_configs(tmp_path: Path) -> None:
    """The checks above could not pass vacuously: each tool rejects a one-word typo."""
    cfg = ZOO["reflector"]
    for check, text, name in (
        (check_bird_config, render_bird(cfg).replace("rr client;", "rr clients;"), "bird.conf"),
        (check_frr_config, render_frr(cfg).replace(" remote-as ", " remote-ass "), "frr.conf"),
        (check_gobgp_config, render_gobgp(cfg).replace("peer-as", "peer-ass"), "gobgpd.toml"),
    ):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DaemonError):
            check(path)


# -- live sessions ------------------------------------------------------------------------------


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout


def addresses6(lab: L2Lab, node: str) -> set[str]:
    """The node's IPv6 addresses on its underlay (global and link-local)."""
    data = json.loads(ip(lab.ns(node), "-j", "-6", "addr", "show", "dev", lab.underlay[node]))
    return {a["local"] for link in data for a in link.get("addr_info", [])}


@pytest.fixture
def lab3() -> Iterator[L2Lab]:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (network namespaces); the suite runs as root")
    with L2Lab(nodes=3) as lab:
        yield lab
    assert lab.leftovers() == []


def start_all(
    stack: ExitStack, lab: L2Lab, workdir: Path, cfgs: dict[str, SpeakerConfig]
) -> dict[str, BgpSpeaker]:
    kinds: dict[str, type[BgpSpeaker]] = {"n1": BirdSpeaker, "n2": FrrSpeaker, "n3": GoBgpSpeaker}
    return {n: stack.enter_context(kinds[n](lab.ns(n), workdir, cfgs[n])) for n in kinds}


@PEERS
@ROOT
def test_frr_and_gobgp_clients_of_bird_with_md5_and_alt_sessions(lab3: L2Lab, tmp_path: Path) -> None:
    nodes = [v4node(i) for i in (1, 2, 3)]
    for n in nodes:
        ip(lab3.ns(n.name), "addr", "add", f"{n.alt_address}/24", "dev", lab3.underlay[n.name])
    sessions = [Session.rr("n1", c, alt=alt) for c in ("n2", "n3") for alt in (False, True)]
    pw = {frozenset(("n1", c)): f"md5-{c}" for c in ("n2", "n3")}
    cfgs = speaker_configs(nodes, sessions, CLUSTER, timers=Timers.lab(), passwords=pw)
    with ExitStack() as stack:
        sp = start_all(stack, lab3, tmp_path, cfgs)
        for s in sp.values():
            s.wait_established()
        assert set(sp["n1"].sessions()) == {"198.18.0.2", "198.18.1.2", "198.18.0.3", "198.18.1.3"}

        def paths_at_bird() -> bool:
            routes = sp["n1"].routes()
            return all(len(routes.get(f"198.19.{i}.0/24", [])) == 2 for i in (2, 3))

        wait_for(paths_at_bird, 10.0, "BIRD holds each client's prefix over both sessions")
        routes = sp["n1"].routes()
        for i in (2, 3):
            got = {(p.from_address, p.next_hop) for p in routes[f"198.19.{i}.0/24"]}
            # learnt over the main and the alternate session, next hop the main address on both
            assert got == {(f"198.18.0.{i}", f"198.18.0.{i}"), (f"198.18.1.{i}", f"198.18.0.{i}")}
        # each client gets the other's prefix reflected twice (once per session), originator kept
        for name, other in (("n2", 3), ("n3", 2)):
            paths = sp[name].routes()[f"198.19.{other}.0/24"]
            assert {p.from_address for p in paths} == {"198.18.0.1", "198.18.1.1"}
            assert {(p.next_hop, p.originator_id) for p in paths} == {
                (f"198.18.0.{other}", f"198.18.0.{other}")
            }


@PEERS
@ROOT
def test_ipv6_sessions_reflect_and_install_ipv6(lab3: L2Lab, tmp_path: Path) -> None:
    nodes = [v6node(i) for i in (1, 2, 3)]
    for n in nodes:
        ip(lab3.ns(n.name), "-6", "addr", "add", f"{n.address}/64", "dev", lab3.underlay[n.name], "nodad")
    cfgs = speaker_configs(
        nodes, [Session.rr("n1", "n2"), Session.rr("n1", "n3")], CLUSTER, timers=Timers.lab()
    )
    with ExitStack() as stack:
        sp = start_all(stack, lab3, tmp_path, cfgs)
        for s in sp.values():
            s.wait_established()

        def reflected() -> bool:
            r2, r3 = sp["n2"].routes("ipv6"), sp["n3"].routes("ipv6")
            return "2001:db8:3::/48" in r2 and "2001:db8:2::/48" in r3

        wait_for(reflected, 10.0, "clients hold each other's IPv6 prefix")
        for name, other in (("n2", 3), ("n3", 2)):
            (path,) = sp[name].routes("ipv6")[f"2001:db8:{other}::/48"]
            assert (path.next_hop, path.from_address) == (f"2001:db8:ff::{other}", "2001:db8:ff::1")
            assert (path.originator_id, path.cluster_list) == (f"198.18.0.{other}", ("1.1.1.1",))
            learnt4 = [p for paths in sp[name].routes("ipv4").values() for p in paths if p.from_address]
            assert learnt4 == []  # no IPv4 session, so no IPv4 prefix from anyone
        for name, want in (("n1", {2, 3}), ("n2", {1, 3})):
            dests = {r["dst"]: r.get("gateway") for r in json.loads(ip(lab3.ns(name), "-j", "-6", "route"))}
            for i in want:
                # FRR sends its link-local next hop beside the global one (shared segment); BIRD
                # then installs the link-local one
                assert dests.get(f"2001:db8:{i}::/48") in addresses6(lab3, f"n{i}"), (name, dests)


# -- frr_delta against a fresh bgpd ------------------------------------------------------------


def router_bgp_config(frr: FrrSpeaker) -> list[str]:
    """The running configuration from the first route-map/router line on, minus comments."""
    lines = frr.vtysh("show running-config").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("route-map", "router bgp")))
    return [line for line in lines[start:] if line.strip() not in ("!", "end") and not line.startswith("!")]


def delta_cases() -> list[tuple[str, SpeakerConfig, SpeakerConfig]]:
    nodes = [v4node(i) for i in (1, 2, 3, 4)]

    def cfg(sessions: list[Session], **kw: object) -> SpeakerConfig:
        return speaker_configs(nodes, sessions, CLUSTER, **kw)["n1"]  # type: ignore[arg-type]

    base = cfg([Session.rr("n1", "n2"), Session.rr("n1", "n3")])
    alt = cfg([Session.rr("n1", "n2"), Session.rr("n1", "n3"), Session.rr("n1", "n3", alt=True)])
    return [
        ("alt session, new prefixes", alt, replace(alt, prefixes=("198.19.7.0/24",))),
        ("alt session gone", alt, base),
        (
            "add neighbour",
            base,
            cfg([Session.rr("n1", "n2"), Session.rr("n1", "n3"), Session.peer("n1", "n4")]),
        ),
        ("remove neighbour", base, cfg([Session.rr("n1", "n2")])),
        ("client to peer", base, cfg([Session.rr("n1", "n2"), Session.peer("n1", "n3")])),
        ("stop reflecting", base, cfg([Session.peer("n1", "n2"), Session.peer("n1", "n3")])),
        ("start reflecting", cfg([Session.peer("n1", "n2")]), cfg([Session.rr("n1", "n2")])),
        ("cluster id", base, replace(base, cluster_id="9.9.9.9")),
        ("prefixes", base, replace(base, prefixes=("198.19.99.0/24", "2001:db8:99::/48"))),
        ("timers", base, replace(base, timers=Timers.lab())),
        (
            "password on",
            base,
            cfg([Session.rr("n1", "n2"), Session.rr("n1", "n3")], passwords={frozenset(("n1", "n2")): "pw"}),
        ),
        ("no fib", base, replace(base, install_routes=False)),
        ("alt session", base, alt),
        ("swap everything", base, cfg([Session.peer("n1", "n4", alt=True)], timers=Timers.lab())),
    ]


@PEERS
@ROOT
def test_frr_delta_reaches_the_fresh_config(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces); the suite runs as root")
    with L2Lab(nodes=2) as lab:
        for i, (name, old, new) in enumerate(delta_cases()):
            with FrrSpeaker(lab.ns("n1"), tmp_path / f"live{i}", old) as live:
                live.apply(new)
                applied = router_bgp_config(live)
            with FrrSpeaker(lab.ns("n2"), tmp_path / f"fresh{i}", new) as fresh:
                want = router_bgp_config(fresh)
            assert applied == want, f"{name}: frr_delta {frr_delta(old, new)}"
    assert lab.leftovers() == []


# -- Calico resources against Calico's own schemas ---------------------------------------------

CALICO = Path(__file__).resolve().parent.parent / "data" / "calico"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _strict(schema: Any) -> Any:
    """Close every object schema that lists its properties (the API server's strict field
    validation rejects unknown fields; ``metadata`` has no properties and stays open)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd(name: str) -> tuple[str, str, dict[str, Any]]:
    """(apiVersion, kind, schema) of a stored Calico CRD."""
    crd = yaml.safe_load((CALICO / name).read_text())
    (version,) = crd["spec"]["versions"]
    api = f"{crd['spec']['group']}/{version['name']}"
    return api, crd["spec"]["names"]["kind"], _strict(version["schema"]["openAPIV3Schema"])


_FORMATS = jsonschema.FormatChecker(formats=())


def _ipv4(value: object) -> bool:
    return not isinstance(value, str) or value == "" or bool(ipaddress.IPv4Address(value))  # "" = omitempty


def _cidrv4(value: object) -> bool:
    return not isinstance(value, str) or value == "" or bool(ipaddress.IPv4Interface(value))


def _cidr(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.ip_network(value, strict=False))


for _fmt, _check in (("ipv4", _ipv4), ("cidrv4", _cidrv4), ("cidr", _cidr)):
    _FORMATS.checks(_fmt, raises=ValueError)(_check)


def _validators() -> dict[str, tuple[str, jsonschema.protocols.Validator]]:
    out = {}
    for name in ("projectcalico.org_bgppeers.yaml", "projectcalico.org_bgpconfigurations.yaml"):
        api, kind, schema = _crd(name)
        out[kind] = (api, jsonschema.Draft4Validator(schema, format_checker=_FORMATS))
    node = _strict(json.loads((CALICO / "node.schema.json").read_text()))
    out["Node"] = ("projectcalico.org/v3", jsonschema.Draft4Validator(node, format_checker=_FORMATS))
    return out


VALIDATORS = _validators()


def metadata_problems(meta: dict[str, Any]) -> list[str]:
    """What the API server would refuse in the name and labels (null values: merge-patch removals)."""
    problems = []
    if not (len(meta["name"]) <= 253 and _DNS_SUBDOMAIN.match(meta["name"])):
        problems.append(f"name {meta['name']!r}")
    for key, value in meta.get("labels", {}).items():
        prefix, _, name = key.rpartition("/")
        if prefix and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix)):
            problems.append(f"label prefix {key!r}")
        if not (0 < len(name) <= 63 and _LABEL.match(name)):
            problems.append(f"label name {key!r}")
        if value is not None and not (len(value) <= 63 and _LABEL.match(value)):
            problems.append(f"label value {key}={value!r}")
    return problems


def calico_problems(resources: list[dict[str, Any]]) -> list[str]:
    problems = []
    for r in resources:
        where = f"{r['kind']}/{r['metadata']['name']}"
        problems += [f"{where}: {p}" for p in metadata_problems(r["metadata"])]
        if r["kind"] == "Secret":
            assert r["apiVersion"] == "v1" and all(
                re.fullmatch(r"[-._a-zA-Z0-9]+", k) for k in r["stringData"]
            )
            continue
        api, validator = VALIDATORS[r["kind"]]
        if r["apiVersion"] != api:
            problems.append(f"{where}: apiVersion {r['apiVersion']} != {api}")
        problems += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(r)]
    return problems


def calico_plans() -> dict[str, list[dict[str, Any]]]:
    nodes = [v4node(i) for i in (1, 2, 3, 4, 5)]
    sessions = [
        Session.peer("n1", "n2"),
        *(Session.rr(r, c) for r in ("n1", "n2") for c in ("n3", "n4", "n5")),
    ]
    pw = {frozenset((r, c)): f"pw-{r}" for r in ("n1", "n2") for c in ("n3", "n4", "n5")}
    lab = speaker_configs(nodes, sessions, CLUSTER, passwords=pw)
    out = {"two reflectors, passwords": render_calico(lab, ASN)}
    inv_nodes = tuple(
        InvNode(
            f"node-{i}.rack-{i % 4}",
            f"198.18.0.{i + 1}",
            f"198.18.0.{i + 1}",
            ASN,
            {"zone": f"z{i % 3}"},
            None,
            (),
        )
        for i in range(24)
    )
    for label, policy in (("planner per-reflector", Policy()), ("planner two levels", Policy(levels=2))):
        inv = Inventory(inv_nodes, policy)
        p = plan(inv)
        out[label] = render_calico(speakers_for(inv, p.sessions, p.cluster_ids), ASN)
    other = speaker_configs(nodes, sessions[:4], CLUSTER)
    out["previous plan, other AS"] = render_calico(lab, 65000, previous=other)
    return out


@pytest.mark.parametrize("name", sorted(calico_plans()))
def test_calico_resources_validate_against_calico_schemas(name: str) -> None:
    resources = calico_plans()[name]
    assert {r["kind"] for r in resources} >= {"BGPConfiguration", "Node", "BGPPeer"}
    assert calico_problems(resources) == []
    assert list(yaml.safe_load_all(calico_yaml(resources))) == resources


def test_calico_validation_is_not_vacuous() -> None:
    """The same checks refuse a typo, a wrong enum, a bad cluster id and a bad label."""
    base = calico_plans()["two reflectors, passwords"]
    peer = next(r for r in base if r["kind"] == "BGPPeer")
    node = next(r for r in base if r["kind"] == "Node")
    broken = [
        {**peer, "spec": {**peer["spec"], "peerSelecter": "x"}},
        {**peer, "spec": {**peer["spec"], "sourceAddress": "Node"}},
        {**node, "spec": {"bgp": {"routeReflectorClusterID": "1.2.3"}}},
        {**node, "metadata": {"name": "n1", "labels": {"netkit.io/rr-" + "x" * 70: "client"}}},
        {**base[0], "spec": {**base[0]["spec"], "asNumber": "64512"}},
    ]
    for resource in broken:
        assert calico_problems([resource]) != [], resource
