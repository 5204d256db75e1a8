"""deploy/: the Kubernetes manifests parse, the kustomizations reference what exists, and the
netkit configuration in the ConfigMap passes the real CLI validation and agrees with the
DaemonSet (command, mount, probes, ports, image) and the Services. The control plane
(controller/, agent/): the whole of deploy/ built by kustomize validates for Kubernetes 1.29 and
later (kubernetes-validate), the workloads' command lines parse with the real CLI, and RBAC is
held to the API calls the code makes (an exact list, no wildcards, the agent writes no spec)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import netkit
import netkit.cli
from dnscache.core.config import ServeConfig
from netkit.base.fields import ConfigError
from netkit.cli import build_parser
from netkit.cli.dns import build_config, flag_values

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DNSCACHE = DEPLOY / "dnscache"
CONTROLLER = DEPLOY / "controller"
AGENT = DEPLOY / "agent"
EXAMPLE = DEPLOY / "examples" / "cluster-addresses"
IMAGE = "ghcr.io/netkit/netkit"
KUSTOMIZE_KINDS = ("Kustomization", "Component")
NODE_RESOLV_CONF = "nameserver 192.0.2.53\n"  # a data-centre resolver, not a cluster address

Doc = dict[str, Any]


# -- reading deploy/ ------------------------------------------------------------------------------
def load_docs(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"{path}: a document is not a mapping"
    return docs


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def kustomization_files() -> list[Path]:
    return [p for p in yaml_files() if p.name in ("kustomization.yaml", "kustomization.yml")]


def kustomization(directory: Path) -> Doc:
    found = [directory / n for n in ("kustomization.yaml", "kustomization.yml") if (directory / n).is_file()]
    assert len(found) == 1, f"{directory}: expected exactly one kustomization file, found {found}"
    (doc,) = load_docs(found[0])
    assert doc.get("kind", "Kustomization") in KUSTOMIZE_KINDS, found[0]
    return doc


def references(directory: Path, k: Doc) -> Iterator[tuple[str, Path]]:
    """(field, path) for every local file or directory a kustomization names."""
    for field in ("resources", "components"):
        for entry in k.get(field) or []:
            yield field, directory / entry
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for entry in gen.get("files") or []:
            yield "files", directory / str(entry).split("=", 1)[-1]
    for patch in k.get("patches") or []:
        if "path" in patch:
            yield "patches", directory / patch["path"]
    for entry in k.get("patchesStrategicMerge") or []:
        yield "patchesStrategicMerge", directory / entry


def resolve(directory: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, Doc]]:
    """A tiny `kustomize build` without the transformations: the documents a kustomization's
    resources and components (recursively) contain, each with the file it came from."""
    assert directory not in seen, f"kustomization cycle: {[*seen, directory]}"
    k = kustomization(directory)
    out: list[tuple[Path, Doc]] = []
    for field in ("resources", "components"):
        for entry in k.get(field) or []:
            target = (directory / entry).resolve()
            if target.is_dir():
                out += resolve(target, (*seen, directory))
            else:
                out += [(target, d) for d in load_docs(target)]
    return out


def generator_files() -> set[Path]:
    return {
        p.resolve()
        for kfile in kustomization_files()
        for field, p in references(kfile.parent, load_docs(kfile)[0])
        if field == "files"
    }


DNS_OBJECTS = {
    ("ServiceAccount", "netkit-dns"),
    ("ConfigMap", "netkit-dns"),
    ("Service", "kube-dns-upstream"),
    ("DaemonSet", "netkit-dns"),
    ("Service", "netkit-dns-metrics"),
}
CRDS = {
    ("CustomResourceDefinition", f"{plural}.netkit.io")
    for plural in ("l2networks", "bgptopologies", "dnscaches", "nodestates")
}
CONTROLLER_OBJECTS = {
    ("ServiceAccount", "netkit-controller"),
    ("ClusterRole", "netkit-controller"),
    ("ClusterRoleBinding", "netkit-controller"),
    ("Role", "netkit-controller-leader-election"),
    ("RoleBinding", "netkit-controller-leader-election"),
    ("Deployment", "netkit-controller"),
    ("PodDisruptionBudget", "netkit-controller"),
}
AGENT_OBJECTS = {
    ("ServiceAccount", "netkit-agent"),
    ("ClusterRole", "netkit-agent"),
    ("ClusterRoleBinding", "netkit-agent"),
    ("DaemonSet", "netkit-agent"),
}
# each plane's kustomization directory, its objects and the app.kubernetes.io/name it labels them with
PLANES = {
    "netkit-dns": (DNSCACHE, DNS_OBJECTS),
    "netkit-controller": (CONTROLLER, CONTROLLER_OBJECTS),
    "netkit-agent": (AGENT, AGENT_OBJECTS),
}
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def base_objects() -> dict[tuple[str, str], Doc]:
    objects: dict[tuple[str, str], Doc] = {}
    for _, doc in resolve(DEPLOY):
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in objects, f"{key} defined twice"
        objects[key] = doc
    return objects


def hosts(addresses: tuple[Any, ...]) -> set[str]:
    return {a.host for a in addresses}


# -- every file -----------------------------------------------------------------------------------
def test_every_yaml_document_is_a_kubernetes_object_or_a_kustomization() -> None:
    data_files = generator_files()
    assert yaml_files(), "no YAML under deploy/"
    for path in yaml_files():
        if path.resolve() in data_files:
            continue  # a configMapGenerator input (netkit's dns.yaml), checked below
        docs = load_docs(path)
        assert docs, f"{path}: empty"
        for doc in docs:
            assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], f"{path}: no apiVersion"
            assert isinstance(doc.get("kind"), str) and doc["kind"], f"{path}: no kind"
            if doc["kind"] in KUSTOMIZE_KINDS:
                assert path.name == "kustomization.yaml", f"{path}: a {doc['kind']} in the wrong file"
                continue
            name = (doc.get("metadata") or {}).get("name")
            assert isinstance(name, str) and name, f"{path}: {doc['kind']} without metadata.name"


def test_kustomizations_reference_only_files_that_exist() -> None:
    assert (DEPLOY / "kustomization.yaml").is_file()
    for kfile in kustomization_files():
        directory = kfile.parent
        for field, target in references(directory, load_docs(kfile)[0]):
            assert target.exists(), f"{kfile}: {field} entry {target} does not exist"
            if target.is_dir():
                assert field in ("resources", "components"), f"{kfile}: {field} {target} is a directory"
                kustomization(target)


def test_every_manifest_is_reachable_from_a_kustomization() -> None:
    reached = {p for k in kustomization_files() for p, _ in resolve(k.parent)} | generator_files()
    orphans = [p for p in yaml_files() if p.name != "kustomization.yaml" and p.resolve() not in reached]
    assert not orphans, f"YAML files no kustomization uses: {orphans}"


def test_in_test_resolution_of_the_top_kustomization() -> None:
    """What `kubectl apply -k deploy/` would install, resolved here without kustomize."""
    objects = base_objects()
    assert set(objects) == DNS_OBJECTS | CRDS | CONTROLLER_OBJECTS | AGENT_OBJECTS
    # the CRDs first (an apply of the rest needs them), then one entry per plane
    assert kustomization(DEPLOY)["resources"] == ["crds", "dnscache", "controller", "agent"]
    # the ServiceMonitor is only in the optional component: its CRD may not be installed
    assert all(d["kind"] != "ServiceMonitor" for d in objects.values())
    monitoring = resolve(DNSCACHE / "monitoring")
    assert [d["kind"] for _, d in monitoring] == ["ServiceMonitor"]
    assert kustomization(DNSCACHE / "monitoring")["kind"] == "Component"

    for name, (directory, _) in PLANES.items():
        k = kustomization(directory)
        assert k["namespace"] == "kube-system"
        (labels,) = k["labels"]
        assert labels["pairs"] == {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "netkit"}
        # commonLabels (or includeSelectors) would also rewrite kube-dns-upstream's selector
        assert "commonLabels" not in k and labels["includeSelectors"] is False
        assert k["images"] == [{"name": IMAGE, "newTag": netkit.__version__}]


# -- the netkit configuration against the real CLI --------------------------------------------------
def container(ds: Doc, name: str, init: bool = False) -> Doc:
    spec = ds["spec"]["template"]["spec"]
    matches: list[Doc] = [c for c in spec["initContainers" if init else "containers"] if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name!r}"
    return matches[0]


def serve_config(
    dns_yaml: str, ds: Doc, tmp_path: Path, resolv_conf: str = NODE_RESOLV_CONF
) -> tuple[ServeConfig, Path]:
    """Run the DaemonSet's own command line through netkit's parser and build_config, with the
    ConfigMap's dns.yaml where the command expects it."""
    c = container(ds, "netkit-dns")
    command = c["command"]
    assert command[:3] == ["netkit", "dns", "serve"], command
    args = build_parser().parse_args(command[1:])
    assert args.func.__name__ == "cmd_serve" and not args.check
    config_path = Path(args.file)

    # the path in the command is where the ConfigMap volume puts dns.yaml
    (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert mount.get("readOnly") is True and "subPath" not in mount  # subPath mounts never update
    assert volume["configMap"]["name"] == "netkit-dns"
    assert volume["configMap"]["items"] == [{"key": "dns.yaml", "path": config_path.name}]

    local = tmp_path / config_path.name
    local.write_text(dns_yaml)
    rc = tmp_path / "resolv.conf"
    rc.write_text(resolv_conf)
    return build_config(str(local), flag_values(args) | {"resolv_conf": str(rc)}), config_path


def check_consistency(cfg: ServeConfig, objects: dict[tuple[str, str], Doc]) -> None:
    ds = objects[("DaemonSet", "netkit-dns")]
    pod = ds["spec"]["template"]
    c = container(ds, "netkit-dns")
    init = container(ds, "node-local-address", init=True)
    node_local = next(e["value"] for e in init["env"] if e["name"] == "NODE_LOCAL_IP")

    assert cfg.metrics is not None
    # listening: the node-local address (put on a link by the init container) and kube-dns's IP
    assert node_local in hosts(cfg.listen)
    assert len(cfg.listen) == 2 and {a.port for a in cfg.listen} == {53}
    # no container ports: with hostNetwork they would be host ports, and no surge pod would fit
    assert "ports" not in c

    # cluster zones go to kube-dns-upstream, which selects the CoreDNS pods only
    upstream = objects[("Service", "kube-dns-upstream")]
    assert upstream["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert {(p["protocol"], p["port"]) for p in upstream["spec"]["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert {str(z) for z in cfg.zone} == {
        f"{zone}.={upstream['spec']['clusterIP']}:53"
        for zone in ("cluster.local", "in-addr.arpa", "ip6.arpa")
    }
    assert upstream["spec"]["clusterIP"] not in hosts(cfg.listen)

    # metrics, probes, annotations and the headless Service all use the configured port
    get = c["livenessProbe"]["httpGet"]
    assert (get["path"], get["port"], get["host"]) == ("/healthz", cfg.metrics.port, node_local)
    assert cfg.metrics.host in ("0.0.0.0", get["host"]), f"the liveness probe cannot reach {cfg.metrics}"
    # readiness: this pod's own process serves (its ready file), not whoever answers the port
    assert cfg.ready_file is not None
    assert c["readinessProbe"]["exec"]["command"] == ["cat", cfg.ready_file]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert str(Path(cfg.ready_file).parent) == mounts["pod-state"] and "emptyDir" in volumes["pod-state"]
    # takeover: the control socket on a hostPath that the old and the new pod mount at one path
    assert cfg.takeover and cfg.control is not None and cfg.workers == 1
    assert cfg.keeper  # a crashed worker is forked again on the sockets its keeper holds
    assert str(Path(cfg.control).parent) == mounts["handover"]
    assert volumes["handover"]["hostPath"] == {"path": mounts["handover"], "type": "DirectoryOrCreate"}
    assert pod["spec"]["terminationGracePeriodSeconds"] > cfg.deadline
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(cfg.metrics.port)
    svc = objects[("Service", "netkit-dns-metrics")]
    assert svc["spec"]["clusterIP"] == "None"
    (sport,) = svc["spec"]["ports"]
    assert (sport["name"], sport["port"]) == ("metrics", cfg.metrics.port)
    assert sport["targetPort"] == cfg.metrics.port
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(cfg.metrics.port)
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    # the cache fits in the memory limit with room for the process (about 35 MB)
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    assert cfg.cache_bytes + 64 * 2**20 <= int(limit[:-2]) * 2**20


def test_configmap_dns_yaml_passes_netkit_validation(tmp_path: Path) -> None:
    objects = base_objects()
    cm = objects[("ConfigMap", "netkit-dns")]
    assert set(cm["data"]) == {"dns.yaml"}
    cfg, _ = serve_config(cm["data"]["dns.yaml"], objects[("DaemonSet", "netkit-dns")], tmp_path)

    assert hosts(cfg.listen) == {"169.254.20.10", "10.96.0.10"}
    assert str(cfg.metrics) == "0.0.0.0:9253"
    assert (cfg.cache_size, cfg.stale_window, cfg.workers) == (100000, 86400, 1)
    assert cfg.resolv_conf.endswith("resolv.conf")
    assert [str(u) for u in cfg.upstream] == ["192.0.2.53:53"]  # from the node's resolv.conf
    raw = yaml.safe_load(cm["data"]["dns.yaml"])
    assert raw["resolv_conf"] == "/etc/resolv.conf" and "upstream" not in raw
    check_consistency(cfg, objects)


def test_node_resolv_conf_pointing_at_kube_dns_is_refused_as_a_loop(tmp_path: Path) -> None:
    """What deploy/README.md says: a node whose resolv.conf lists the kube-dns IP would forward
    to this cache itself; netkit refuses to start."""
    objects = base_objects()
    dns_yaml = objects[("ConfigMap", "netkit-dns")]["data"]["dns.yaml"]
    with pytest.raises(ConfigError, match="forwarding loop"):
        serve_config(dns_yaml, objects[("DaemonSet", "netkit-dns")], tmp_path, "nameserver 10.96.0.10\n")


def test_example_overlay_dns_yaml_passes_netkit_validation(tmp_path: Path) -> None:
    cfg, _ = serve_config(
        (EXAMPLE / "dns.yaml").read_text(), base_objects()[("DaemonSet", "netkit-dns")], tmp_path
    )
    assert hosts(cfg.listen) == {"169.254.25.10", "10.0.0.10"}
    patches = "\n".join(p["patch"] for p in kustomization(EXAMPLE)["patches"])
    assert {z.upstreams[0].host for z in cfg.zone} == {"10.0.0.11"}
    assert "value: 10.0.0.11" in patches and patches.count("169.254.25.10") == 2


def test_daemonset_shape() -> None:
    objects = base_objects()
    ds = objects[("DaemonSet", "netkit-dns")]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "Default"
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},  # new pod first, it takes over
    }
    assert spec["serviceAccountName"] == objects[("ServiceAccount", "netkit-dns")]["metadata"]["name"]

    c = container(ds, "netkit-dns")
    assert c["resources"] == {"requests": {"cpu": "25m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
    assert c["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    init = container(ds, "node-local-address", init=True)
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    script = init["command"][-1]
    assert "ip link add nodelocaldns type dummy" in script
    assert 'ip addr replace "$NODE_LOCAL_IP/32" dev nodelocaldns' in script

    # one image, overridable through the kustomization's images entry, tagged with netkit's version
    (entry,) = kustomization(DNSCACHE)["images"]
    for image in (c["image"], init["image"]):
        name, _, tag = image.rpartition(":")
        assert name == entry["name"] == IMAGE
        assert tag == entry["newTag"] == netkit.__version__


# -- a real kustomize build, when there is a binary -------------------------------------------------
def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def build(directory: Path) -> list[Doc]:
    command = kustomize_command()
    if command is None:
        pytest.skip(
            "neither kustomize nor kubectl is installed; the kustomizations are resolved in-test"
            " instead (test_in_test_resolution_of_the_top_kustomization)"
        )
    proc = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


def by_key(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_kustomize_build_of_deploy(tmp_path: Path) -> None:
    built = by_key(build(DEPLOY))
    assert set(built) == set(base_objects())
    for key in CRDS:  # cluster-scoped, labelled by the generator
        assert "namespace" not in built[key]["metadata"]
    for name, (_, keys) in PLANES.items():
        for key in keys:
            meta = built[key]["metadata"]
            if key[0] in CLUSTER_SCOPED:
                assert "namespace" not in meta, key
            else:
                assert meta["namespace"] == "kube-system", key
            assert meta["labels"]["app.kubernetes.io/name"] == name, key
            assert meta["labels"]["app.kubernetes.io/part-of"] == "netkit", key
    assert built[("Service", "kube-dns-upstream")]["spec"]["selector"] == {"k8s-app": "kube-dns"}
    pod_labels = built[("DaemonSet", "netkit-dns")]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/part-of"] == "netkit"
    cfg, _ = serve_config(
        built[("ConfigMap", "netkit-dns")]["data"]["dns.yaml"], built[("DaemonSet", "netkit-dns")], tmp_path
    )
    check_consistency(cfg, built)


def test_kustomize_build_of_the_example_overlay(tmp_path: Path) -> None:
    built = by_key(build(EXAMPLE))
    assert set(built) == DNS_OBJECTS  # the overlay is of deploy/dnscache
    assert built[("ConfigMap", "netkit-dns")]["data"]["dns.yaml"] == (EXAMPLE / "dns.yaml").read_text()
    assert built[("Service", "kube-dns-upstream")]["spec"]["clusterIP"] == "10.0.0.11"
    cfg, _ = serve_config(
        built[("ConfigMap", "netkit-dns")]["data"]["dns.yaml"], built[("DaemonSet", "netkit-dns")], tmp_path
    )
    check_consistency(cfg, built)


def test_kustomize_build_with_the_monitoring_component(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, overlay)],  # kustomize refuses absolute paths
                "components": [os.path.relpath(DNSCACHE / "monitoring", overlay)],
            }
        )
    )
    built = by_key(build(overlay))
    sm = built[("ServiceMonitor", "netkit-dns")]
    svc = built[("Service", "netkit-dns-metrics")]
    assert sm["metadata"]["namespace"] == "kube-system"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # no other Service carries all the selected labels
    others = [
        k
        for (kind, k), d in built.items()
        if kind == "Service"
        and k != "netkit-dns-metrics"
        and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"].get("labels", {}).items()
    ]
    assert not others
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [svc["spec"]["ports"][0]["name"]]


# -- the control plane: controller/ and agent/ ----------------------------------------------------
# Every version kubernetes-validate has a schema for, from 1.29 (the CRDs' floor) to its newest.
KUBERNETES_VERSIONS = tuple(
    f"1.{minor}.0" for minor in range(29, int(kubernetes_validate.latest_version().split(".")[1]) + 1)
)
# what the downward API gives the pods in this test (fieldRef path -> value)
FIELD_VALUES = {"metadata.name": "netkit-controller-7d9c5b6f4-x2x7q", "spec.nodeName": "node-1"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}

# (apiGroup, resource, verb) that each account is granted, and no more. From the calls the code
# makes (netkit/control/kube.py, reconciler.py, the controllers, agent.py): list and watch (the
# informers), merge and JSON patches, a NodeState's create, status patches, core/v1 Events. Also
# granted, not called today: get and update (kube.update_status, a read and a replace with the
# resourceVersion) and events.k8s.io Events. Calico mode (bgpcontroller._calico_*): its BGPPeers
# and BGPConfiguration on the Kubernetes datastore, and Node merge patches. spec.attachment:
# Multus NetworkAttachmentDefinitions.
# A change here goes with the same change in deploy/*/rbac.yaml.
OWNED = ("l2networks", "dnscaches", "bgptopologies")
CONTROLLER_CLUSTER_RULES = (
    {("netkit.io", r, v) for r in OWNED for v in ("get", "list", "watch", "patch", "update")}
    | {("netkit.io", f"{r}/status", v) for r in OWNED for v in ("get", "patch", "update")}
    | {("netkit.io", "nodestates", v) for v in ("get", "list", "watch", "create", "patch")}
    | {("", r, v) for r in ("nodes", "services") for v in ("get", "list", "watch")}
    | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    | {("crd.projectcalico.org", "bgppeers", v) for v in ("list", "create", "patch", "delete")}
    | {("crd.projectcalico.org", "bgpconfigurations", v) for v in ("get", "create", "patch")}
    | {("", "nodes", "patch")}
    | {
        ("k8s.cni.cncf.io", "network-attachment-definitions", v)
        for v in ("list", "create", "patch", "delete")
    }
)
AGENT_CLUSTER_RULES = (
    {("netkit.io", "nodestates", v) for v in ("get", "list", "watch")}
    | {("netkit.io", "nodestates/status", v) for v in ("get", "patch", "update")}
    | {("", "events", v) for v in ("create", "patch")}
    | {("", "nodes/status", v) for v in ("get", "update")}  # the node checks' Netkit* conditions
)

# (namespace or None for cluster-wide, apiGroup, resource, verb, resourceName or None)
Grant = tuple[str | None, str, str, str, str | None]


@functools.cache
def built_deploy() -> tuple[Doc, ...]:
    """``kustomize build deploy/``, once for the tests below (which only read it)."""
    return tuple(build(DEPLOY))


def built_objects() -> dict[tuple[str, str], Doc]:
    return by_key(list(built_deploy()))


def pod_spec(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def grants(built: dict[tuple[str, str], Doc], account: str, namespace: str) -> set[Grant]:
    """Everything the ServiceAccount ``namespace/account`` may do through the bindings in ``built``."""
    out: set[Grant] = set()
    for (kind, _), binding in built.items():
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        if subject not in binding.get("subjects", []):
            continue
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io", binding["metadata"]["name"]
        role = built[(ref["kind"], ref["name"])]  # a binding to a role that does not exist fails here
        if ref["kind"] == "Role":
            assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
        scope = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
        for rule in role["rules"]:
            names = rule.get("resourceNames") or [None]
            out |= {
                (scope, g, r, v, n)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
                for n in names
            }
    return out


def cluster_wide(granted: set[Grant]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for scope, g, r, v, n in granted if scope is None and n is None}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` in command and args: a variable the container defines is replaced,
    ``$$`` is a literal ``$``, anything else stays as written."""
    return re.sub(
        r"\$\$|\$\((\w+)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def container_env(c: Doc) -> dict[str, str]:
    env = {}
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = FIELD_VALUES[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def command_line(workload: Doc, name: str) -> tuple[list[str], dict[str, str]]:
    """The container's command and args as the kubelet runs them ($(VAR) expanded), and its env."""
    c = container(workload, name)
    env = container_env(c)
    argv = [expand(a, env) for a in [*c["command"], *c.get("args", [])]]
    assert not [a for a in argv if "$(" in a], f"{name}: an undefined variable in {argv}"
    return argv, env


def check_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Doc:
    """``netkit ... --check`` on the manifest's own command line: the options in effect."""
    assert argv[0] == "netkit", argv
    capsys.readouterr()
    rc = netkit.cli.main([*argv[1:], "--check"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    options = yaml.safe_load(out)
    assert isinstance(options, dict), out
    return options


def test_every_object_validates_for_kubernetes_1_29_and_later() -> None:
    """The whole of deploy/ as kustomize builds it, each object against the API schema of each
    version (strict: a misspelt field is an error, not silently dropped by the API server)."""
    built = built_deploy()
    assert KUBERNETES_VERSIONS[0] == "1.29.0" and len(KUBERNETES_VERSIONS) >= 4
    errors = []
    for version in KUBERNETES_VERSIONS:
        for doc in built:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.absolute_path)
                errors.append(f"{version} {doc['kind']}/{doc['metadata']['name']} {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_controller_deployment_and_its_disruption_budget() -> None:
    built = built_objects()
    deploy = built[("Deployment", "netkit-controller")]
    pod = deploy["spec"]["template"]
    spec = pod_spec(deploy)
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}

    # a PDB in the same namespace selects exactly these pods and lets one go at a time
    (pdb,) = [d for (kind, _), d in built.items() if kind == "PodDisruptionBudget"]
    assert pdb["metadata"]["namespace"] == deploy["metadata"]["namespace"] == "kube-system"
    assert pdb["spec"]["minAvailable"] == 1 < deploy["spec"]["replicas"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for (kind, _), other in built.items():
        if kind in ("Deployment", "DaemonSet") and other is not deploy:
            assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items()

    # replicas preferably on distinct nodes
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert "hostNetwork" not in spec

    c = container(deploy, "netkit-controller")
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert c["args"] == ["--metrics", "0.0.0.0:9260", "--identity", "$(POD_NAME)"]
    (port,) = c["ports"]
    assert (port["containerPort"], port["protocol"]) == (9260, "TCP")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] in (port["name"], 9260)
        assert "host" not in get  # the pod IP: the server listens on 0.0.0.0
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9260"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for key in (("Deployment", "netkit-controller"), ("DaemonSet", "netkit-agent")):
        for ctr in pod_spec(built[key])["containers"]:
            assert ctr["image"] == f"{IMAGE}:{netkit.__version__}", key


def test_agent_daemonset_shape() -> None:
    built = built_objects()
    ds = built[("DaemonSet", "netkit-agent")]
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    # the new pod first: its DNS cache takes the old one's sockets over (netkit/control/dnsagent.py)
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert (
        ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    )
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    (c,) = spec["containers"]
    # the node's netkit-cni shim, copied from the image to the host's plugin directory
    (init,) = spec["initContainers"]
    assert init["name"] == "install-cni" and "/opt/netkit/cni/netkit-cni" in init["command"][-1]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert [m["mountPath"] for m in init["volumeMounts"]] == ["/host/opt/cni/bin"]
    assert c["args"][c["args"].index("--cni-socket") + 1] == "/run/netkit/cni.sock"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    sc = c["securityContext"]
    caps = sc["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert (
        sorted(caps["add"])
        == sorted(set(caps["add"]))
        == ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "SYS_ADMIN"]
    )
    assert sc["runAsUser"] == 0 and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and not sc.get("privileged")
    assert "hostPID" not in spec and "hostIPC" not in spec
    # no ports: with hostNetwork they are host ports, and the surge pod would never be scheduled
    assert "ports" not in c

    # the node's directories, each at the same path inside: the state directory (the DNS cache's
    # control socket, which the old and the new pod share) and the BGP speakers' sockets
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    assert {p["path"] for p in host_paths.values()} == {
        "/var/lib/netkit",
        "/run/bird",
        "/run/frr",
        "/run/netkit",
        "/var/run/netns",
        "/opt/cni/bin",
        "/var/lib/cni",
    }
    read_only = {"/var/run/netns", "/opt/cni/bin"}  # the runtime's pod namespaces, the IPAM plugins
    for name, hp in host_paths.items():
        assert hp["type"] == "DirectoryOrCreate", name
        assert mounts[name]["mountPath"] == hp["path"], name
        assert bool(mounts[name].get("readOnly")) == (hp["path"] in read_only), name
    assert mounts["netns"]["mountPropagation"] == "HostToContainer"  # namespaces made after the start
    # the root filesystem is read-only: /tmp is a volume
    assert any(m["mountPath"] == "/tmp" for m in mounts.values())
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


def test_agent_probes_reach_its_metrics_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With hostNetwork a probe's default host is the pod IP, the node's: the probes must name
    the host the agent serves on (127.0.0.1 here: the kubelet is in the node's network namespace)."""
    built = built_objects()
    ds = built[("DaemonSet", "netkit-agent")]
    argv, env = command_line(ds, "netkit-agent")
    monkeypatch.setenv("NODE_NAME", env["NODE_NAME"])
    options = check_cli(argv, capsys)
    host, _, port = str(options["metrics"]).rpartition(":")
    c = container(ds, "netkit-agent")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, int(port)), probe
        assert host in ("0.0.0.0", get.get("host")), f"{probe} goes to {get.get('host')}, metrics on {host}"
        assert get.get("host") is not None, f"{probe}: the pod IP is the node IP (hostNetwork)"


def test_command_lines_parse_with_the_real_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built = built_objects()

    argv, _ = command_line(built[("Deployment", "netkit-controller")], "netkit-controller")
    assert argv[:2] == ["netkit", "controller"]
    controller = check_cli(argv, capsys)
    assert controller["identity"] == FIELD_VALUES["metadata.name"]  # unique per replica
    assert controller["metrics"] == "0.0.0.0:9260" and controller["kubeconfig"] is None
    # the Lease it elects a leader on is the one its Role lets it use
    role = built[("Role", "netkit-controller-leader-election")]
    assert role["metadata"]["namespace"] == controller["namespace"]
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert [n for r in named for n in r["resourceNames"]] == [controller["lease"]]
    assert controller["renew_deadline"] < controller["lease_duration"]

    ds = built[("DaemonSet", "netkit-agent")]
    argv, env = command_line(ds, "netkit-agent")
    assert argv[:2] == ["netkit", "agent"] and "--node" not in argv  # from $NODE_NAME
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert netkit.cli.main([*argv[1:], "--check"]) == 2  # the env var is what names the node
    assert "--node: required" in capsys.readouterr().err
    monkeypatch.setenv("NODE_NAME", env["NODE_NAME"])
    agent = check_cli(argv, capsys)
    assert agent["node"] == FIELD_VALUES["spec.nodeName"]
    assert agent["metrics"] == "127.0.0.1:9261" and agent["kubeconfig"] is None
    assert agent["netns"] is None  # the node's own network namespace (hostNetwork)
    # the DNS part is on, its files in the hostPath the old and the new pod share
    mounts = {m["mountPath"] for m in container(ds, "netkit-agent")["volumeMounts"]}
    assert agent["state_dir"] == agent["bgp_state_dir"] == "/var/lib/netkit" and agent["state_dir"] in mounts
    assert agent["speaker"] is None  # no BGP speaker flags: the BGP part is off until set
    # the same with --node, as `netkit agent --help` shows it
    assert check_cli([*argv, "--node", "x"], capsys)["node"] == "x"


def test_every_service_account_exists_and_is_bound() -> None:
    built = built_objects()
    workloads = [d for (kind, _), d in built.items() if kind in ("Deployment", "DaemonSet")]
    assert {d["metadata"]["name"] for d in workloads} == {"netkit-dns", "netkit-controller", "netkit-agent"}
    for w in workloads:
        spec, ns = pod_spec(w), w["metadata"]["namespace"]
        account = spec.get("serviceAccountName")
        assert account, f"{w['metadata']['name']}: runs as the namespace's default account"
        sa = built.get(("ServiceAccount", account))
        assert sa is not None and sa["metadata"]["namespace"] == ns, account
        token = spec.get("automountServiceAccountToken", sa.get("automountServiceAccountToken", True))
        granted = grants(built, account, ns)
        if token:  # it talks to the API: something must allow it
            assert granted, f"{account}: no RoleBinding or ClusterRoleBinding"
        else:  # netkit-dns: no token, no grants
            assert not granted, account
    # every binding's subjects exist, and its role
    for (kind, name), binding in built.items():
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            for s in binding["subjects"]:
                assert s["kind"] == "ServiceAccount", name
                assert built[("ServiceAccount", s["name"])]["metadata"]["namespace"] == s["namespace"]
            assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in built


def test_rbac_has_no_wildcards_and_no_dangerous_verbs() -> None:
    built = built_objects()
    roles = [d for (kind, _), d in built.items() if kind in ("Role", "ClusterRole")]
    assert len(roles) == 3
    for role in roles:
        name = role["metadata"]["name"]
        assert "aggregationRule" not in role, name
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, name
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in v for v in rule.get(field, [])), f"{name}: a wildcard in {field}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), name
            assert not {"secrets", "pods", "pods/exec", "serviceaccounts/token"} & set(rule["resources"]), (
                name
            )


def test_rbac_is_what_the_code_calls() -> None:
    """The grants of each account, held to the exact list above."""
    built = built_objects()
    controller = grants(built, "netkit-controller", "kube-system")
    assert cluster_wide(controller) == CONTROLLER_CLUSTER_RULES
    # leader election, in its namespace only: create (cannot be limited by name), then read and
    # renew or take over that one Lease by update; no list, watch or delete
    assert {x for x in controller if x[0] is not None} == {
        ("kube-system", "coordination.k8s.io", "leases", "create", None),
        ("kube-system", "coordination.k8s.io", "leases", "get", "netkit-controller"),
        ("kube-system", "coordination.k8s.io", "leases", "update", "netkit-controller"),
    }
    assert {x for x in controller if x[0] is None and x[4] is not None} == set()

    agent = grants(built, "netkit-agent", "kube-system")
    assert {x[0] for x in agent} == {None} and {x[4] for x in agent} == {None}
    assert cluster_wide(agent) == AGENT_CLUSTER_RULES


def test_the_agent_writes_no_spec_and_the_controller_no_node_status() -> None:
    """The controller publishes (NodeState spec), the agent reports (NodeState status): neither
    can write the other's half."""
    built = built_objects()
    agent = cluster_wide(grants(built, "netkit-agent", "kube-system"))
    written = {(g, r) for g, r, v in agent if v in WRITE_VERBS}
    assert written == {("netkit.io", "nodestates/status"), ("", "events"), ("", "nodes/status")}
    assert {v for g, r, v in agent if r == "nodestates"} == {"get", "list", "watch"}
    assert not {v for g, r, v in agent if r == "nodestates/status"} & {"create", "delete"}

    controller = cluster_wide(grants(built, "netkit-controller", "kube-system"))
    assert not [x for x in controller if x[1] == "nodestates/status"]
    assert not [x for x in controller if x[1] == "nodestates" and x[2] in ("update", "delete")]
    assert not [x for x in controller if x[0] in ("", "netkit.io") and x[2] == "delete"]
