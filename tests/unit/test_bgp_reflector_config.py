"""The reflector's configuration (pure): the documented example loads, every error names its key,
a planner ``SpeakerConfig`` renders to a config that loads back to the same sessions, the
exabgp.conf and environment it implies, and the prefix-filter syntax."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bgp.core.model import Neighbor, NodeInfo, Role, Session, Timers, speaker_configs
from bgp.core.render.exabgp import render_reflector_config
from bgp.reflector.core.config import EXAMPLE, load_config, parse_config
from bgp.reflector.core.exabgp_conf import PROCESS_NAME, exabgp_environment, render_exabgp_conf
from bgp.reflector.core.policy import (
    MaxPrefix,
    MaxPrefixAction,
    PolicyError,
    PrefixFilter,
    Reject,
    parse_block,
)
from bgp.reflector.core.prefix import from_text
from netkit.base.addr import HostPort
from netkit.base.fields import ConfigError

MINIMAL = {"router_id": "198.18.0.2", "asn": 64512, "neighbors": [{"address": "198.18.0.1", "asn": 64512}]}


def test_the_documented_example_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert (cfg.router_id, cfg.asn, cfg.effective_cluster_id, cfg.metrics) == (
        "198.18.0.2", 64512, "198.18.0.2", HostPort("198.18.0.2", 9179),
    )  # fmt: skip
    a, b, rr2 = cfg.neighbors
    assert (a.role, a.password, a.allowed_prefixes) == (
        Role.CLIENT,
        "s3cret",
        ("198.19.0.0/16 le 26", "2001:db8::/32 le 64"),
    )
    assert a.max_prefix == MaxPrefix(10000, MaxPrefixAction.KEEP)
    assert (b.allowed_prefixes, b.max_prefix) == (
        ("198.19.3.0/24",),
        MaxPrefix(100, MaxPrefixAction.TEARDOWN),
    )
    assert rr2.role is Role.PEER
    assert cfg.timers == Timers(hold=9, keepalive=3, connect_retry=1)
    r = cfg.reflector()
    assert set(r.peers) == {"198.18.0.1", "198.18.0.3", "198.18.0.4"}


def test_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.local_address == "198.18.0.2" and cfg.cluster_id is None and cfg.families == ("ipv4", "ipv6")
    assert cfg.exabgp.api == "wire" and cfg.exabgp.speed == 1.0 and cfg.listen and cfg.port == 179
    assert parse_config({**MINIMAL, "exabgp": {"api": "text"}}).exabgp.speed == 0.1
    assert parse_config({**MINIMAL, "exabgp": {"reactor_speed": 0.5}}).exabgp.speed == 0.5
    n = cfg.neighbors[0]
    assert (n.name, n.role, n.max_prefix, n.allowed_prefixes, n.passive) == (
        "198.18.0.1",
        Role.CLIENT,
        None,
        None,
        False,
    )


def with_(path: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL))
    node = doc
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1], "config: expected a mapping"),
        (with_("router_id", ...), "router_id: required"),
        (with_("router_id", "2001:db8::1"), "router_id: '2001:db8::1' is not an IPv4 address"),
        (with_("asn", 0), "asn: 0 is out of range: must be between 1 and 4294967295"),
        (with_("asn", "x"), "asn: 'x' is not an integer"),
        (with_("asn", True), "asn: True is not an integer"),
        (with_("colour", "red"), "colour: unknown key"),
        (with_("neighbors", []), "neighbors: expected a non-empty list"),
        (with_("neighbors.0.adress", "x"), "neighbors[0].adress: unknown key"),
        (with_("neighbors.0.address", ...), "neighbors[0].address: required"),
        (with_("neighbors.0.address", "not-ip"), "neighbors[0].address: 'not-ip' is not an IP address"),
        (
            with_("neighbors.0.role", "boss"),
            "neighbors[0].role: 'boss' is not one of client, peer, reflector",
        ),
        (with_("neighbors.0.password", "has space"), "neighbors[0].password"),
        (with_("neighbors.0.password", 'q"uote'), "neighbors[0].password"),
        (with_("neighbors.0.passive", "yes"), "neighbors[0].passive: 'yes' is not true or false"),
        (
            with_("neighbors.0.allowed_prefixes", "198.19.0.0/16"),
            "neighbors[0].allowed_prefixes: expected a list",
        ),
        (with_("neighbors.0.allowed_prefixes", ["198.19.0.1/16"]), "neighbors[0].allowed_prefixes[0]"),
        (with_("neighbors.0.allowed_prefixes", ["198.19.0.0/16 le 8"]), "le must be between 16 and 32"),
        (
            with_("neighbors.0.allowed_prefixes", ["198.19.0.0/16 ge 24"]),
            "expected PREFIX or 'PREFIX le LENGTH'",
        ),
        (
            with_("neighbors.0.max_prefix", {"limit": 0}),
            "neighbors[0].max_prefix.limit: 0 is out of range: must be between",
        ),
        (with_("neighbors.0.max_prefix", {"action": "keep"}), "neighbors[0].max_prefix.limit: required"),
        (with_("neighbors.0.max_prefix", {"limit": 5, "action": "shout"}), "neighbors[0].max_prefix.action"),
        (
            with_("neighbors.0.max_prefix", {"limit": 5, "when": 1}),
            "neighbors[0].max_prefix.when: unknown key",
        ),
        (with_("neighbors.0.address", "198.18.0.2"), "is the reflector's own local_address"),
        (with_("defaults.colour", 1), "defaults.colour: unknown key"),
        (with_("families", ["ipv4", "vpnv4"]), "families[1]: 'vpnv4' is not one of ipv4, ipv6"),
        (with_("families", []), "families: expected a non-empty list"),
        (with_("metrics", "nowhere"), "metrics:"),
        (with_("timers.hold", 2), "timers.hold: must be 0 or at least 3"),
        (with_("timers.jitter", 2), "timers.jitter: unknown key"),
        (
            with_("igp_metrics", {"198.18.0.1": -1}),
            "igp_metrics.198.18.0.1: -1 is out of range: must be between",
        ),
        (with_("igp_metrics", {"x": 1}), "igp_metrics.x: 'x' is not an IP address"),
        (with_("exabgp.api", "json"), "exabgp.api: 'json' is not one of wire, text"),
        (with_("exabgp.reactor_speed", 0), "exabgp.reactor_speed"),
        (with_("exabgp.log_level", "LOUD"), "exabgp.log_level"),
        (with_("exabgp.chunk", 0), "exabgp.chunk"),
        (with_("exabgp.turbo", True), "exabgp.turbo: unknown key"),
        (with_("log_level", "chatty"), "log_level: 'chatty' is not one of debug"),
        (with_("cluster_id", "x"), "cluster_id: 'x' is not an IPv4 address"),
        (with_("local_address_v6", "198.18.0.2"), "local_address_v6: '198.18.0.2' is not an IPv6 address"),
        (with_("port", 70000), "port: 70000 is out of range: must be between 1 and 65535"),
    ],
)
def test_errors_name_the_key(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    assert message in str(exc.value)


def test_duplicate_neighbour_and_ebgp_client_are_refused() -> None:
    doc = with_("asn", 64512)
    doc["neighbors"].append({"address": "198.18.0.1", "asn": 64512})
    with pytest.raises(ConfigError, match=r"neighbors\[1\].address: 198.18.0.1 is also neighbors\[0\]"):
        parse_config(doc)
    doc = with_("neighbors.0", {"address": "198.18.0.1", "asn": 65000, "role": "client"})
    with pytest.raises(ConfigError, match="an eBGP neighbour"):
        parse_config(doc)


def test_yaml_errors_name_the_source() -> None:
    with pytest.raises(ConfigError, match=r"my\.yaml: not valid YAML"):
        load_config("a: [", "my.yaml")
    with pytest.raises(ConfigError, match=r"my\.yaml: asn: required"):
        load_config("router_id: 1.2.3.4\nneighbors: []\n", "my.yaml")


def test_defaults_apply_unless_a_neighbour_says_otherwise() -> None:
    doc = with_("defaults", {"max_prefix": 50, "allowed_prefixes": ["198.19.0.0/16"], "password": "pw"})
    doc["neighbors"].append(
        {"address": "198.18.0.3", "asn": 64512, "max_prefix": {"limit": 7, "action": "teardown"}}
    )
    a, b = parse_config(doc).neighbors
    assert (a.max_prefix, a.allowed_prefixes, a.password) == (MaxPrefix(50), ("198.19.0.0/16",), "pw")
    assert b.max_prefix == MaxPrefix(7, MaxPrefixAction.TEARDOWN) and b.password == "pw"


# -- from a planner SpeakerConfig -------------------------------------------------------------------


def test_planner_output_renders_to_a_loadable_config() -> None:
    nodes = [
        NodeInfo(f"n{i}", f"198.18.0.{i}", 64512, f"198.18.0.{i}", (f"198.19.{i}.0/24",)) for i in range(1, 5)
    ]
    sessions = [Session.rr("n4", "n1"), Session.rr("n4", "n2"), Session.peer("n3", "n4")]
    cfgs = speaker_configs(
        nodes, sessions, {"n4": "10.255.0.1"}, timers=Timers.lab(), passwords={frozenset({"n1", "n4"}): "pw1"}
    )
    text = render_reflector_config(
        cfgs["n4"], allowed={"n1": ["198.19.1.0/24"]}, max_prefix=1000, metrics="198.18.0.4:9179"
    )
    assert "not originated by the reflector" in text and "198.19.4.0/24" in text
    cfg = load_config(text)
    assert (cfg.router_id, cfg.cluster_id, cfg.local_address, cfg.timers) == (
        "198.18.0.4", "10.255.0.1", "198.18.0.4", Timers.lab(),
    )  # fmt: skip
    by_name = {n.name: n for n in cfg.neighbors}
    assert by_name["n1"].role is Role.CLIENT and by_name["n1"].password == "pw1"
    assert by_name["n1"].allowed_prefixes == ("198.19.1.0/24",) and by_name["n2"].allowed_prefixes is None
    assert by_name["n3"].role is Role.PEER
    assert all(n.max_prefix == MaxPrefix(1000) for n in cfg.neighbors)


def test_alternate_local_addresses_are_kept() -> None:
    nodes = [
        NodeInfo("rr", "198.18.0.4", 64512, "198.18.0.4", alt_address="198.18.1.4"),
        NodeInfo("c", "198.18.0.1", 64512, "198.18.0.1", alt_address="198.18.1.1"),
    ]
    cfg = speaker_configs(nodes, [Session.rr("rr", "c", alt=True)], {})["rr"]
    loaded = load_config(render_reflector_config(cfg))
    assert loaded.neighbors[0].address == "198.18.1.1" and loaded.neighbors[0].local_address == "198.18.1.4"
    env = exabgp_environment(loaded, "root")
    assert env["exabgp.tcp.bind"] == "198.18.0.4 198.18.1.4"
    assert "local-address 198.18.1.4;" in render_exabgp_conf(loaded, ["/usr/bin/python3", "-m", "x"])


# -- exabgp.conf ------------------------------------------------------------------------------------


def test_exabgp_conf_and_environment() -> None:
    cfg = load_config(EXAMPLE)
    conf = render_exabgp_conf(cfg, ["/venv/bin/python", "-m", "bgp.reflector.process"])
    assert f"process {PROCESS_NAME} {{\n    run /venv/bin/python -m bgp.reflector.process;" in conf
    for line in (
        "neighbor 198.18.0.1 {",
        "local-as 64512;",
        "hold-time 9;",
        "md5-password s3cret;",
        "adj-rib-in false;",
        "adj-rib-out false;",
        "manual-eor true;",
        "receive { packets; open; update; refresh; }",
    ):
        assert line in conf
    env = exabgp_environment(cfg, "root")
    assert env["exabgp.daemon.user"] == "root" and env["exabgp.api.cli"] == "false"
    assert env["exabgp.tcp.bind"] == "198.18.0.2" and env["exabgp.reactor.speed"] == "1.0"
    text_mode = parse_config({**yaml.safe_load(EXAMPLE), "exabgp": {"api": "text"}, "listen": False})
    assert "receive { parsed; update; open; refresh; }" in render_exabgp_conf(text_mode, ["/p"])
    assert exabgp_environment(text_mode, "me")["exabgp.tcp.bind"] == ""
    for bad in (["/a b"], ["/p", "x;y"], ["/p", ""], ["/p", "{"]):
        with pytest.raises(ValueError):
            render_exabgp_conf(cfg, bad)


def test_ipv6_neighbours_use_the_ipv6_local_address() -> None:
    doc = with_("local_address_v6", "2001:db8::2")
    doc["neighbors"].append({"address": "2001:db8::1", "asn": 64512, "name": "six"})
    cfg = parse_config(doc)
    conf = render_exabgp_conf(cfg, ["/p"])
    assert "neighbor 2001:db8::1 {" in conf and "local-address 2001:db8::2;" in conf
    assert exabgp_environment(cfg, "root")["exabgp.tcp.bind"] == "198.18.0.2 2001:db8::2"


# -- prefix filters ---------------------------------------------------------------------------------


def test_prefix_filter() -> None:
    f = PrefixFilter(["198.19.0.0/16 le 24", "2001:db8::/32 le 48"])

    def check(flt: PrefixFilter, text: str) -> Reject | None:
        return flt.check(from_text(text))

    assert check(f, "198.19.3.0/24") is None and check(f, "198.19.0.0/16") is None
    assert check(f, "198.19.3.0/25") is Reject.NOT_ALLOWED and check(f, "198.20.0.0/24") is Reject.NOT_ALLOWED
    assert check(f, "2001:db8:1::/48") is None and check(f, "2001:db8:1::/64") is Reject.NOT_ALLOWED
    assert check(f, "198.18.0.0/15") is Reject.NOT_ALLOWED and check(f, "2001:db9::/32") is Reject.NOT_ALLOWED
    assert check(f, "0.0.0.0/0") is Reject.DEFAULT_ROUTE and check(f, "::/0") is Reject.DEFAULT_ROUTE
    for bad in (b"", b"\x18\xc6", b"\x21\x01\x02\x03\x04\x05", b"\xff", b"\xff\x81" + bytes(17)):
        assert f.check(bad) is Reject.MALFORMED, bad
    assert check(PrefixFilter(["0.0.0.0/0"], allow_default=True), "0.0.0.0/0") is None
    anything = PrefixFilter()
    assert check(anything, "203.0.113.0/24") is None and check(anything, "0.0.0.0/0") is Reject.DEFAULT_ROUTE
    assert check(anything, "::/0") is Reject.DEFAULT_ROUTE
    assert check(PrefixFilter(allow_default=True), "::/0") is None


def test_parse_block_errors() -> None:
    assert parse_block("198.19.0.0/16") == (4, 0xC6130000, 16, 32)
    assert parse_block("2001:db8::/32 le 64")[2:] == (32, 64)
    for bad in ("198.19.0.1/16", "198.19.0.0/16 le", "198.19.0.0/16 le 33", "x", "198.19.0.0/16 ge 20"):
        with pytest.raises(PolicyError):
            parse_block(bad)


def test_neighbor_objects_from_the_model_carry_roles() -> None:
    n = Neighbor("x", "198.18.0.1", 64512, Role.REFLECTOR)
    cfg = parse_config(with_("neighbors.0", {"address": n.address, "asn": n.asn, "role": str(n.role)}))
    assert cfg.neighbors[0].role is Role.REFLECTOR and not cfg.reflector().peers[n.address].client


def test_every_problem_of_a_config_at_once() -> None:
    text = """\
router_id: 198.18.0.300
asn: 64512
colour: blue
timers: {hold: 2}
families: [ipv4, ipx]
exabgp: {api: fast}
neighbors:
  - {address: 198.18.0.1, asn: 64512, role: boss}
  - {address: 198.18.0.1, asn: 64512}
  - {address: nowhere, asn: 64512, max_prefix: {limit: 0, action: explode}}
  - {address: 198.18.0.9}
"""
    with pytest.raises(ConfigError) as info:
        load_config(text, "rr.yaml")
    errors = info.value.errors
    expected = [
        "rr.yaml: colour: unknown key",
        "rr.yaml: router_id: '198.18.0.300' is not an IPv4 address",
        "rr.yaml: neighbors[0].role: 'boss' is not one of client, peer, reflector",
        "rr.yaml: neighbors[2].address: 'nowhere' is not an IP address",
        "rr.yaml: neighbors[2].max_prefix.limit: 0 is out of range: must be between 1 and 2147483648",
        "rr.yaml: neighbors[2].max_prefix.action: 'explode' is not one of keep, teardown",
        "rr.yaml: neighbors[3].asn: required",
        "rr.yaml: families[1]: 'ipx' is not one of ipv4, ipv6",
        "rr.yaml: timers.hold: must be 0 or at least 3 (RFC 4271)",
        "rr.yaml: exabgp.api: 'fast' is not one of wire, text",
    ]
    for e in expected:
        assert any(line.startswith(e) for line in errors), (e, errors)
    assert len(errors) == len(expected), errors
