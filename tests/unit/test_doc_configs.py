"""Every configuration file the documents show loads in the loader it is for: networks files,
BGP inventories, speakers files, reflector and DNS configurations (each with every problem
reported, so a broken example fails here with all of them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.docexamples import yaml_blocks


def _l2(text: str) -> object:
    from netkit.l2.core.model import load_network_file

    return load_network_file(text)


def _inventory(text: str) -> object:
    from bgp.core.inventory import load_inventory

    return load_inventory(text, "doc")


def _speakers(text: str) -> object:
    from bgp.control import load_speakers

    return load_speakers(text, "doc")


def _reflector(text: str) -> object:
    from bgp.reflector.core.config import load_config

    return load_config(text, "doc")


def _dns(text: str) -> object:
    from dnscache.core.config import load

    return load(yaml.safe_load(text), "doc")


def _netkit_object(text: str) -> object:
    """A netkit.io object as kube-apiserver takes it: defaulted, nothing pruned, valid."""
    from labs.apiserver.schema import apply_defaults, prune, validate
    from netkit.control.core.crds import definitions

    obj = yaml.safe_load(text)
    (crd,) = [c for c in definitions() if c["spec"]["names"]["kind"] == obj["kind"]]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    pruned, unknown = prune(apply_defaults(obj, schema), schema)
    errors = validate(pruned, schema)
    assert not unknown and not errors, (unknown, errors)
    return pruned


def _cni(text: str) -> object:
    """A CNI configuration (a .conf, or a .conflist whose plugins get its name and version, as
    a runtime gives them): each plugin of ours parsed as netkit-cni parses it."""
    import json

    from netkit.cni.core.spec import parse_request

    doc = yaml.safe_load(text)
    plugins = doc.get("plugins") or [doc]
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/p",
    }
    found = []
    for plugin in plugins:
        conf = {"cniVersion": doc["cniVersion"], "name": doc["name"], **plugin}
        if conf["type"] == "netkit-cni":
            found.append(parse_request(env, json.dumps(conf).encode()))
    assert found, "no netkit-cni plugin in it"
    return found


def _kubernetes(text: str) -> object:
    """A built-in Kubernetes object, valid for the oldest version the deploy/ manifests support."""
    import kubernetes_validate

    obj = yaml.safe_load(text)
    kubernetes_validate.validate(obj, "1.29.0", strict=True)
    return obj


def loader(doc: dict[str, Any]) -> Callable[[str], object] | None:
    keys = set(doc)
    if "cniVersion" in keys:
        return _cni
    if doc.get("apiVersion") == "v1" and doc.get("kind") in ("Pod", "ConfigMap", "Namespace"):
        return _kubernetes
    if str(doc.get("apiVersion", "")).startswith("netkit.io/"):
        return _netkit_object
    if "networks" in keys:
        return _l2
    if {"asn", "nodes"} <= keys:
        return _inventory
    if "speakers" in keys:
        return _speakers
    if "router_id" in keys:
        return _reflector
    if "listen" in keys:
        return _dns
    return None


BLOCKS = yaml_blocks()
KUSTOMIZE = {"images", "resources", "components", "patches"}  # checked by test_deploy_manifests


def test_every_yaml_block_of_the_documents_has_a_loader() -> None:
    unknown = [
        where
        for where, text in BLOCKS
        if loader(yaml.safe_load(text)) is None and not set(yaml.safe_load(text)) & KUSTOMIZE
    ]
    assert not unknown, f"YAML blocks no loader here checks: {unknown}"
    assert len(BLOCKS) >= 6


CONFIGS = [(w, t) for w, t in BLOCKS if loader(yaml.safe_load(t)) is not None]


@pytest.mark.parametrize(("where", "text"), CONFIGS, ids=[w for w, _ in CONFIGS])
def test_documented_configuration_loads(where: str, text: str) -> None:
    load = loader(yaml.safe_load(text))
    assert load is not None
    load(text)
