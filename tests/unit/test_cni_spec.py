"""netkit-cni's contract (pure): the runtime's request parsed or refused with the spec's error
code (every problem of a configuration named at once), the attachment's host veth name stable,
results and errors as the spec's schemas say, for 1.0.0 and 0.4.0."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.cni.core.spec import CniError, host_veth_name, parse_request, result, version_result
from tests.cnischema import check_error, check_result

CONF: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "blue",
    "type": "netkit-cni",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]},
}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/p1",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni:/opt/cni/bin",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0",
}


def refused(env: dict[str, str], conf: Any) -> CniError:
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    with pytest.raises(CniError) as info:
        parse_request(env, stdin)
    check_error(info.value.to_dict())
    return info.value


def test_a_runtimes_add_is_parsed() -> None:
    req = parse_request(ENV, json.dumps(CONF).encode())
    assert req.conf is not None and req.conf.network == "blue" and req.conf.bridge_timeout == 10
    assert req.path == ("/usr/lib/cni", "/opt/cni/bin") and req.pod == "team-a/web-0"
    assert req.conf.raw == CONF  # what IPAM is given


def test_version_needs_no_configuration() -> None:
    req = parse_request({"CNI_COMMAND": "VERSION"}, b"")
    assert version_result(req.asked) == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}
    # libcni's validation sends only {"cniVersion": ...}: answered in that version
    req = parse_request({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert version_result(req.asked)["cniVersion"] == "0.4.0"
    req = parse_request({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.2.0"}')
    assert version_result(req.asked)["cniVersion"] == "1.0.0"


@pytest.mark.parametrize(
    ("env", "conf", "code", "says"),
    [
        ({**ENV, "CNI_COMMAND": "UP"}, CONF, 4, "CNI_COMMAND"),
        (ENV, b"{not json", 6, "not JSON"),
        (ENV, [], 6, "JSON object"),
        (ENV, {**CONF, "cniVersion": "0.2.0"}, 1, "0.2.0"),
        (ENV, {k: v for k, v in CONF.items() if k != "cniVersion"}, 7, "cniVersion"),
        (ENV, {**CONF, "colour": "blue"}, 2, "colour"),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, CONF, 4, "CNI_NETNS"),
        ({**ENV, "CNI_IFNAME": "a/b"}, CONF, 4, "CNI_IFNAME"),
        ({**ENV, "CNI_IFNAME": "x" * 16}, CONF, 4, "CNI_IFNAME"),
        ({**ENV, "CNI_ARGS": "novalue"}, CONF, 4, "KEY=VALUE"),
        ({**ENV, "CNI_COMMAND": "CHECK"}, CONF, 7, "prevResult"),
    ],
)
def test_bad_requests_get_the_specs_code(env: dict[str, str], conf: Any, code: int, says: str) -> None:
    err = refused(env, conf)
    assert err.code == code and says in str(err), err


def test_every_problem_of_a_configuration_is_named_at_once() -> None:
    bad = {
        "cniVersion": "1.0.0",
        "type": "netkit-cni",
        "ipam": {"type": "/bin/sh"},
        "bridgeTimeoutSeconds": -1,
    }
    err = refused(ENV, {**bad, "stateDir": "relative"})
    assert err.code == 7
    for field in ("name:", "network:", "ipam.type:", "bridgeTimeoutSeconds:", "stateDir:"):
        assert field in err.details, err.details


def test_del_without_a_netns_is_accepted() -> None:
    req = parse_request({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, json.dumps(CONF).encode())
    assert req.command == "DEL" and req.netns == ""


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=15))
def test_the_host_veth_name_is_stable_and_fits(container: str, ifname: str) -> None:
    name = host_veth_name(container, ifname)
    assert name == host_veth_name(container, ifname) and len(name.encode()) <= 15 and name.isalnum()


IPAM = {
    "cniVersion": "1.0.0",
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"address": "fd00::5/64"}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.1.0.53"]},
}


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0"])
def test_results_have_the_specs_shape(version: str) -> None:
    out = result(
        version,
        ("nkbr-x", "02:00:00:00:00:01"),
        ("nkabc", "02:00:00:00:00:02"),
        ("eth0", "02:00:00:00:00:03", "/run/netns/p1"),
        IPAM,
    )
    check_result(out)
    assert out["cniVersion"] == version and [i["interface"] for i in out["ips"]] == [2, 2]
    assert out["interfaces"][2] == {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/p1"}
    versions = [ip.get("version") for ip in out["ips"]]
    assert versions == (["4", "6"] if version == "0.4.0" else [None, None])
