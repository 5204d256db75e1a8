"""The lab API server (labs.apiserver over a real etcd) as kubectl sees it, with a fresh HOME so
no discovery cache hides anything: the netkit.io CRDs installed and their examples applied,
``get`` with printer columns, categories and short names, an invalid object refused with its
field path, an unknown field refused (kubectl's fieldValidation=Strict), re-apply and edit
(generation bumped on spec changes only, not on status), a stale update refused, ``get -w``,
``wait --for=condition=Ready``, finalizers holding a delete until removed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.apiserver.lab import ApiLab
from labs.runid import RunDir
from tests.kubehelpers import Kubectl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kubectl(run_dir: RunDir) -> Iterator[Kubectl]:
    assert shutil.which("kubectl"), "kubectl is missing: make installs it (Debian's kubectl)"
    assert shutil.which("etcd"), "etcd is missing: make installs it (Debian's etcd-server)"
    with ApiLab(run_dir.path / "api") as lab:
        home = run_dir.path / "home"
        home.mkdir()
        k = Kubectl(lab, home)
        k("apply", "-k", "deploy/crds")
        yield k


def test_crds_examples_and_columns(kubectl: Kubectl) -> None:
    assert "Server Version: v1.32.0-netkit-lab" in kubectl("version").stdout
    crds = kubectl("get", "crd", "-o", "name").stdout.split()
    assert sorted(crds) == [
        f"customresourcedefinition.apiextensions.k8s.io/{p}.netkit.io"
        for p in ("bgptopologies", "dnscaches", "l2networks", "nodestates")
    ]
    applied = kubectl("apply", "-k", "deploy/examples/netkit").stdout
    assert (
        "l2network.netkit.io/blue created" in applied and "bgptopology.netkit.io/cluster created" in applied
    )
    table = kubectl("get", "l2net").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "VNI", "VLAN", "NODES", "UPDATED", "READY", "AGE"]
    assert table[1].split()[:3] == ["blue", "vxlan", "100"] and table[2].split()[:3] == [
        "storage",
        "vlan",
        "200",
    ]
    assert "REASON" in kubectl("get", "l2networks.netkit.io", "-o", "wide").stdout.splitlines()[0]
    everything = kubectl("get", "netkit").stdout
    assert "bgptopology.netkit.io/cluster" in everything and "dnscache.netkit.io/node-local" in everything
    blue = kubectl.json("get", "l2network", "blue")
    assert blue["spec"]["port"] == 4789 and blue["metadata"]["generation"] == 1  # defaulted by the schema
    again = kubectl("apply", "-k", "deploy/examples/netkit").stdout
    assert "l2network.netkit.io/blue unchanged" in again
    explained = kubectl("explain", "l2network.spec.vni").stdout  # from /openapi/v3
    assert "FIELD: vni <integer>" in explained and "the VXLAN network identifier" in explained


def test_invalid_objects_are_refused_with_the_field_path(kubectl: Kubectl) -> None:
    bad = """
apiVersion: netkit.io/v1alpha1
kind: L2Network
metadata: {name: bad}
spec: {type: vxlan, vni: 16777216, mtu: 20}
"""
    done = kubectl("apply", "-f", "-", stdin=bad, ok=False)
    assert done.returncode == 1
    assert 'The L2Network "bad" is invalid' in done.stderr
    assert (
        "spec.vni: Invalid value: 16777216: spec.vni in body should be less than or equal to 16777215"
        in done.stderr
    )
    assert "spec.mtu: Invalid value: 20" in done.stderr
    one_of = kubectl("apply", "-f", "-", stdin=bad.replace("vni: 16777216, mtu: 20", "vlan: 5"), ok=False)
    assert "a vxlan network needs vni (and no vlan)" in one_of.stderr
    unknown = kubectl(
        "apply", "-f", "-", stdin=bad.replace("mtu: 20", "colour: red").replace("16777216", "7"), ok=False
    )
    assert 'unknown field "spec.colour"' in unknown.stderr
    assert kubectl("get", "l2net", "bad", ok=False).returncode == 1  # nothing was stored


def test_generation_status_and_stale_updates(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "deploy/examples/netkit/l2network-vxlan.yaml")
    kubectl("patch", "l2net", "blue", "--type=merge", "-p", '{"spec":{"mtu":1400}}')
    assert kubectl.json("get", "l2net", "blue")["metadata"]["generation"] == 2
    status = {
        "status": {
            "observedGeneration": 2,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllNodesReady",
                    "message": "3 of 3",
                    "lastTransitionTime": "2026-12-06T10:00:00Z",
                    "observedGeneration": 2,
                }
            ],
        }
    }
    kubectl("patch", "l2net", "blue", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    blue = kubectl.json("get", "l2net", "blue")
    assert blue["metadata"]["generation"] == 2 and blue["status"]["conditions"][0]["status"] == "True"
    kubectl("patch", "l2net", "blue", "--type=merge", "-p", '{"status":{"observedGeneration":9}}')  # ignored
    assert kubectl.json("get", "l2net", "blue")["status"]["observedGeneration"] == 2
    assert kubectl("wait", "--for=condition=Ready", "l2net/blue", "--timeout=10s").returncode == 0
    assert "True" in kubectl("get", "l2net", "blue").stdout.splitlines()[1]
    stale = dict(blue)
    stale["metadata"] = {
        **blue["metadata"],
        "resourceVersion": str(int(blue["metadata"]["resourceVersion"]) - 1),
    }
    done = kubectl("replace", "-f", "-", stdin=json.dumps(stale), ok=False)
    assert "the object has been modified" in done.stderr
    created_twice = kubectl("create", "-f", "deploy/examples/netkit/l2network-vxlan.yaml", ok=False)
    assert 'l2networks.netkit.io "blue" already exists' in created_twice.stderr


def test_watch_and_finalizers(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "deploy/examples/netkit/l2network-vxlan.yaml")
    watch = subprocess.Popen(
        ["kubectl", "get", "l2net", "-w", "--output-watch-events", "-o", "json"],
        env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        kubectl(
            "patch", "l2net", "blue", "--type=merge", "-p", '{"metadata":{"finalizers":["netkit.io/nodes"]}}'
        )
        kubectl("delete", "l2net", "blue", "--wait=false")
        held = kubectl.json("get", "l2net", "blue")
        assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == ["netkit.io/nodes"]
        kubectl(
            "patch", "l2net", "blue", "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]'
        )
        assert kubectl("get", "l2net", "blue", ok=False).returncode == 1  # gone with its last finalizer
        time.sleep(1.0)
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    events, decoder, at = [], json.JSONDecoder(), 0
    while out[at:].strip():
        ev, at = decoder.raw_decode(out, at + len(out[at:]) - len(out[at:].lstrip()))
        events.append(
            (
                ev["type"],
                ev["object"]["metadata"]["name"],
                bool(ev["object"]["metadata"].get("deletionTimestamp")),
            )
        )
    assert events[0] == ("ADDED", "blue", False) and events[-1][:2] == ("DELETED", "blue")
    assert ("MODIFIED", "blue", True) in events  # the delete that finalizers held


def test_selectors_pages_and_a_watch_from_before_compaction(run_dir: RunDir) -> None:
    import urllib.request

    with ApiLab(run_dir.path / "api2") as lab:
        assert lab.server is not None
        base = lab.server.url + "/api/v1/namespaces/default/configmaps"

        def call(method: str, url: str, body: dict | None = None) -> dict:  # type: ignore[type-arg]
            req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
            req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]

        for i in range(5):
            labels = {"app": "dns"} if i % 2 else {"app": "web"}
            call(
                "POST",
                base,
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "labels": labels}},
            )
        dns = call("GET", base + "?labelSelector=app%3Ddns")
        assert [o["metadata"]["name"] for o in dns["items"]] == ["c1", "c3"]
        page = call("GET", base + "?limit=2")
        assert len(page["items"]) == 2 and page["metadata"]["remainingItemCount"] == 3
        rest = call("GET", base + f"?limit=10&continue={page['metadata']['continue']}")
        assert [o["metadata"]["name"] for o in rest["items"]] == ["c2", "c3", "c4"]
        old_rv = page["metadata"]["resourceVersion"]
        call("PUT", base + "/c0", {**page["items"][0], "data": {"k": "v"}})
        lab.etcd.client.compact(lab.etcd.client.revision())
        with urllib.request.urlopen(
            base + f"?watch=true&resourceVersion={int(old_rv) - 3}", timeout=10
        ) as resp:
            event = json.loads(resp.readline())
        assert (
            event["type"] == "ERROR"
            and event["object"]["code"] == 410
            and event["object"]["reason"] == "Expired"
        )


def test_a_broken_crd_is_refused_with_what_it_lacks(kubectl: Kubectl) -> None:
    broken = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.test}
spec:
  group: example.test
  scope: Cluster
  names: {kind: Widget}
  versions: [{name: v1, served: true, storage: false}]
"""
    done = kubectl("apply", "-f", "-", stdin=broken, ok=False)
    assert done.returncode == 1
    assert "spec.names.plural: Required value" in done.stderr
    assert "exactly one version must be the storage version" in done.stderr
    assert "widgets.example.test" not in kubectl("get", "crd", "-o", "name").stdout


def test_a_protobuf_body_is_refused_with_what_to_use_instead(kubectl: Kubectl) -> None:
    """Typed kubectl commands (create namespace) send protobuf, which the lab server does not
    decode: a 415 that says so, not a parse error; the same object by apply goes in."""
    done = kubectl("create", "namespace", "team-x", ok=False)
    assert done.returncode != 0 and "JSON bodies only, not protobuf" in done.stderr, done.stderr
    kubectl(
        "apply", "-f", "-", stdin='{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}}'
    )
    assert kubectl.json("get", "namespace", "team-x")["metadata"]["name"] == "team-x"
