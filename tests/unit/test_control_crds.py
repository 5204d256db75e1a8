"""The netkit.io CRDs: generated from one source (a drift fails), structural as kube-apiserver
requires, valid CustomResourceDefinitions for Kubernetes 1.29+ (kubernetes-validate), and what
their schemas (ranges, enums, patterns, CEL rules) accept and refuse, with the field path."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labs.apiserver.schema import apply_defaults, prune, validate
from netkit.control import crdgen
from netkit.control.core.crds import CATEGORY, GROUP, KINDS, VERSION, definitions

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
EXAMPLES = ROOT / "deploy" / "examples" / "netkit"


def schema_of(kind: str) -> dict[str, Any]:
    (crd,) = [c for c in definitions() if c["spec"]["names"]["kind"] == kind]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def check(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """What kube-apiserver does with a create (or, given ``old``, an update): default, prune, validate."""
    schema = schema_of(obj["kind"])
    pruned, _ = prune(apply_defaults(obj, schema), schema)
    return validate(pruned, schema) if old is None else validate(pruned, schema, apply_defaults(old, schema))


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        yield path, schema
        for key, sub in schema.get("properties", {}).items():
            yield from nodes(sub, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            yield from nodes(schema["items"], f"{path}[]")
        if isinstance(schema.get("additionalProperties"), dict):
            yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def test_the_files_in_deploy_are_what_the_source_gives(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", "--out", str(CRDS)]) == 0, capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, str(CRDS / "generate.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_drifted_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    (tmp_path / "l2networks.netkit.io.yaml").write_text("edited by hand\n")
    (tmp_path / "old.netkit.io.yaml").write_text("kind: x\n")
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "l2networks.netkit.io.yaml: differs" in err and "old.netkit.io.yaml: no kind" in err


def test_names_categories_scope_and_status_subresource() -> None:
    for crd in definitions():
        spec = crd["spec"]
        names = spec["names"]
        assert crd["metadata"]["name"] == f"{names['plural']}.{GROUP}"
        assert spec["scope"] == "Cluster" and names["categories"] == [CATEGORY] and names["shortNames"]
        (version,) = spec["versions"]
        assert version["name"] == VERSION and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
        assert {"Ready", "Age"} <= set(columns)
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert {"observedGeneration", "conditions"} <= set(status)
    short = [s for c in definitions() for s in c["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short)) and set(KINDS) == {c["spec"]["names"]["kind"] for c in definitions()}


def test_schemas_are_structural() -> None:
    """What kube-apiserver refuses in a CRD (NonStructuralSchema) or warns about (CEL cost)."""
    for crd in definitions():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in nodes(root):
            where = f"{crd['metadata']['name']}{path}"
            if node.get("x-kubernetes-int-or-string"):
                assert "type" not in node, where
            else:
                assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), (
                    where
                )
            assert not ("properties" in node and "additionalProperties" in node), where
            if node.get("type") == "array":
                assert "maxItems" in node and node.get("x-kubernetes-list-type") in (
                    "atomic",
                    "map",
                    "set",
                ), where
                if node["x-kubernetes-list-type"] == "map":
                    assert set(node["x-kubernetes-list-map-keys"]) <= set(
                        node["items"].get("required", [])
                    ), where
            assert (
                "description" in node  # kubectl explain shows it
                or path in ("", ".apiVersion", ".kind", ".metadata")
                or node.get("type") == "string"  # list items and map values: their list says it
                or (node.get("type") in ("integer", "boolean") and path.endswith(("[]", "{}")))
            ), where
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["rule"] and rule["message"], where
        assert root["properties"]["metadata"] == {"type": "object"}


def test_crds_are_valid_for_kubernetes_1_29_and_later() -> None:
    files = sorted(str(p) for p in CRDS.glob("*.netkit.io.yaml"))
    for version in ("1.29.0", "1.32.0"):
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "kubernetes-validate"),
                "--strict",
                "-k",
                version,
                "--quiet",
                *files,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_example_is_valid() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    kinds = set()
    for path in examples:
        if path.name == "kustomization.yaml":
            continue
        obj = yaml.safe_load(path.read_text())
        assert obj["apiVersion"] == f"{GROUP}/{VERSION}", path
        assert check(obj) == [], path
        kinds.add(obj["kind"])
    assert kinds == {"L2Network", "BGPTopology", "DNSCache"}


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())  # type: ignore[no-any-return]


def with_(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


VXLAN, VLAN = example("l2network-vxlan.yaml"), example("l2network-vlan.yaml")
TOPO, DNS = example("bgptopology.yaml"), example("dnscache.yaml")


@pytest.mark.parametrize(
    ("obj", "path", "message"),
    [
        (with_(VXLAN, "spec.vni", 16_777_216), "spec.vni", "should be less than or equal to 16777215"),
        (with_(VXLAN, "spec.vni", "100"), "spec.vni", "must be of type integer"),
        (with_(VXLAN, "spec.type", "geneve"), "spec.type", 'supported values: "vxlan", "vlan"'),
        (with_(VXLAN, "spec.vni", ...), "spec", "a vxlan network needs vni (and no vlan)"),
        (with_(VXLAN, "spec.vlan", 5), "spec", "a vxlan network needs vni (and no vlan)"),
        (with_(VXLAN, "spec.mtu", 60), "spec.mtu", "greater than or equal to 68"),
        (with_(VXLAN, "spec.maxUnavailable", 0), "spec.maxUnavailable", "at least 1 or a percentage"),
        (with_(VXLAN, "spec.maxUnavailable", "150%"), "spec.maxUnavailable", "at least 1 or a percentage"),
        (with_(VXLAN, "spec.probes", [{"timeoutSeconds": 3}]), "spec.probes[0].address", "Required value"),
        (
            with_(VXLAN, "spec.endpoints", [{"mac": "02:00:00:00:01", "node": "n2"}]),
            "spec.endpoints[0].mac",
            "should match",
        ),
        (
            with_(VXLAN, "spec.nodeSelector", {"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "spec.nodeSelector.matchExpressions[0]",
            "In and NotIn need values",
        ),
        (
            with_(VLAN, "spec.underlay", ...),
            "spec",
            "a vlan network needs underlay.interface or underlay.perNode",
        ),
        (with_(VLAN, "spec.vlan", 4095), "spec.vlan", "less than or equal to 4094"),
        (
            with_(VLAN, "spec.endpoints", [{"mac": "02:00:00:00:01:02", "node": "n2"}]),
            "spec",
            "endpoints are for vxlan networks",
        ),
        (
            with_(VLAN, "spec.underlay.interface", "a-name-far-too-long"),
            "spec.underlay.interface",
            "should match",
        ),
        (with_(TOPO, "spec.asn", 0), "spec.asn", "greater than or equal to 1"),
        (with_(TOPO, "spec.speaker", "quagga"), "spec.speaker", 'supported values: "bird", "frr", "calico"'),
        (with_(TOPO, "spec.speaker", ...), "spec.speaker", "Required value"),
        (with_(TOPO, "spec.policy.redundancy", 9), "spec.policy.redundancy", "less than or equal to 8"),
        (with_(TOPO, "spec.policy.top", {"reflectorsPerDomain": 1}), "spec.policy", "top is for levels: 2"),
        (with_(DNS, "spec.upstreams", ["10.0.0.10"]), "spec", "exactly one of upstreamService and upstreams"),
        (with_(DNS, "spec.upstreamService", ...), "spec", "exactly one of upstreamService and upstreams"),
        (with_(DNS, "spec.listen", ["169.254.20.10"]), "spec.listen[0]", "should match"),
        (with_(DNS, "spec.cache.minTTL", 100000), "spec.cache", "minTTL must not be above maxTTL"),
        (
            with_(DNS, "spec.zones", [{"zone": "a.", "upstreams": ["10.0.0.1"]}] * 2),
            "spec.zones[1]",
            "Duplicate value",
        ),
        (with_(DNS, "spec", ...), "spec", "Required value"),
    ],
)
def test_what_the_schema_refuses_names_the_field(obj: dict[str, Any], path: str, message: str) -> None:
    problems = check(obj)
    assert any(p == path and message in m for p, m in problems), problems


def test_every_problem_at_once_and_defaults_and_pruning() -> None:
    bad = with_(with_(VXLAN, "spec.vni", 0), "spec.mtu", 70_000)
    assert {p for p, _ in check(bad)} == {"spec.vni", "spec.mtu"}
    schema = schema_of("L2Network")
    defaulted = apply_defaults({"kind": "L2Network", "spec": {"vni": 7}}, schema)
    assert defaulted["spec"] == {"vni": 7, "type": "vxlan", "port": 4789, "maxUnavailable": 1}
    pruned, dropped = prune(with_(VXLAN, "spec.colour", "red"), schema)
    assert dropped == ["spec.colour"] and "colour" not in pruned["spec"]
    topo = apply_defaults(TOPO, schema_of("BGPTopology"))["spec"]["policy"]
    assert topo["clusterId"] == "per-reflector" and topo["levels"] == 1


def test_transition_rules_guard_what_cannot_change() -> None:
    assert any("type cannot be changed" in m for _, m in check(with_(VXLAN, "spec.type", "vlan"), old=VXLAN))
    assert any("asn cannot be changed" in m for _, m in check(with_(TOPO, "spec.asn", 64513), old=TOPO))
    assert check(with_(TOPO, "spec.policy.redundancy", 3), old=TOPO) == []  # the rest may change
    state = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeState",
        "metadata": {"name": "n1"},
        "spec": {"nodeName": "n1"},
    }
    assert check(state) == []
    assert any(
        "nodeName cannot be changed" in m for _, m in check(with_(state, "spec.nodeName", "n2"), old=state)
    )
