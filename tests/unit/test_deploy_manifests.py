"""deploy/: the Kubernetes manifests parse, the kustomizations reference what exists, and the
netkit configuration in the ConfigMap passes the real CLI validation and agrees with the
DaemonSet (command, mount, probes, ports, image) and the Services."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import netkit
from dnscache.core.config import ServeConfig
from netkit.base.fields import ConfigError
from netkit.cli import build_parser
from netkit.cli.dns import build_config, flag_values

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DNSCACHE = DEPLOY / "dnscache"
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
    assert set(objects) == DNS_OBJECTS | CRDS
    # the ServiceMonitor is only in the optional component: its CRD may not be installed
    assert all(d["kind"] != "ServiceMonitor" for d in objects.values())
    monitoring = resolve(DNSCACHE / "monitoring")
    assert [d["kind"] for _, d in monitoring] == ["ServiceMonitor"]
    assert kustomization(DNSCACHE / "monitoring")["kind"] == "Component"

    k = kustomization(DNSCACHE)
    assert k["namespace"] == "kube-system"
    (labels,) = k["labels"]
    assert labels["pairs"] == {"app.kubernetes.io/name": "netkit-dns", "app.kubernetes.io/part-of": "netkit"}
    # commonLabels (or includeSelectors) would also rewrite kube-dns-upstream's selector
    assert "commonLabels" not in k and labels["includeSelectors"] is False
    assert [i["name"] for i in k["images"]] == [IMAGE]


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
        assert "namespace" not in built.pop(key)["metadata"]
    for doc in built.values():
        assert doc["metadata"]["namespace"] == "kube-system"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "netkit-dns"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "netkit"
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
