"""Configuration: flags and files share one validation; errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnscache.core.config import ServeConfig, load, merge
from dnscache.core.resolvconf import parse_resolv_conf
from netkit.base.addr import AddressError, HostPort, parse_hostport
from netkit.base.fields import ConfigError
from netkit.cli.dns import build_config


def test_hostport_forms() -> None:
    assert parse_hostport("127.0.0.1:53") == HostPort("127.0.0.1", 53)
    assert parse_hostport("[::1]:5353") == HostPort("::1", 5353)
    assert parse_hostport("::1", default_port=53) == HostPort("::1", 53)
    assert parse_hostport("10.0.0.1", default_port=53).port == 53
    for bad in ("", "host:53", "1.2.3.4:0", "1.2.3.4:99999", "[::1", "1.2.3.4:x"):
        with pytest.raises(AddressError):
            parse_hostport(bad, default_port=53)


def test_zones_from_flags_and_file_agree() -> None:
    a = load({"zone": ["cluster.local=10.96.0.10,10.96.0.11:5353"]})
    b = load({"zones": {"cluster.local": ["10.96.0.10", "10.96.0.11:5353"]}})
    assert a.zone == b.zone
    assert a.zone[0].upstreams[1] == HostPort("10.96.0.11", 5353)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"cache_size": 0}, "cache_size: 0 is out of range: must be between 1 and 50000000"),
        ({"cache-size": "lots"}, "cache-size: 'lots' is not an integer"),
        ({"listen": ["127.0.0.1"]}, "listen: '127.0.0.1': a port is required"),
        ({"upstream": ["dns.google"]}, "upstream: 'dns.google'"),
        ({"zone": ["cluster.local"]}, "zone: 'cluster.local': expected ZONE=ADDR"),
        ({"prefetch": "maybe"}, "prefetch: 'maybe' is not true or false"),
        ({"cache_bytes": "12Q"}, "cache_bytes: '12Q' is not a size such as 64M"),
        ({"colour": "blue"}, "colour: unknown key (expected one of: attempt_timeout"),
        ({"min_ttl": 600, "max_ttl": 60}, "min_ttl: 600 is above max_ttl (60)"),
        ({"listen": ["127.0.0.1:53"], "upstream": ["127.0.0.1:53"]}, "forwarding loop"),
        ({"zone": ["a.test=10.0.0.1", "A.test.=10.0.0.2"]}, "same zone is given twice"),
    ],
)
def test_invalid_values_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(values, "test.yaml")


def test_flags_override_the_file(tmp_path: Path) -> None:
    f = tmp_path / "dns.yaml"
    f.write_text("listen: ['127.0.0.1:5353']\nupstream: ['127.0.0.1:5300']\ncache_size: 5\n")
    cfg = build_config(str(f), {"cache_size": "7"})
    assert cfg.cache_size == 7 and cfg.listen == (HostPort("127.0.0.1", 5353),)


def test_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "dns.yaml"
    f.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(str(f), {})
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(str(f), {})
    with pytest.raises(ConfigError, match="No such file"):
        build_config(str(tmp_path / "missing.yaml"), {})


def test_resolv_conf_is_the_embedded_default(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text(
        "search svc.cluster.local\nnameserver 127.0.0.1\nnameserver fe80::1%eth0\n# c\nnameserver ::1\n"
    )
    cfg = build_config(None, {"listen": ["127.0.0.1:5353"], "resolv_conf": str(rc)})
    assert cfg.upstream == (HostPort("127.0.0.1", 53), HostPort("::1", 53))
    rc.write_text("search example\n")
    with pytest.raises(ConfigError, match="lists no usable nameserver"):
        build_config(None, {"resolv_conf": str(rc)})


def test_resolv_conf_parser_skips_junk() -> None:
    assert parse_resolv_conf("nameserver\nnameserver nonsense\nnameserver 10.0.0.1 ; x\n") == [
        HostPort("10.0.0.1", 53)
    ]


def test_merge_keeps_file_values() -> None:
    base = load({"upstream": ["127.0.0.1:5300"], "deadline": 5})
    cfg = merge(base, {"attempt_timeout": "4"})
    assert cfg.deadline == 5 and cfg.attempt_timeout == 4 and isinstance(cfg, ServeConfig)
