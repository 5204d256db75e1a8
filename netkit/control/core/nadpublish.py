"""The Multus NetworkAttachmentDefinitions the L2 controller keeps (pure): one per L2Network
with ``spec.attachment`` and namespace it names, so a pod joins the network with the standard
annotation ``k8s.v1.cni.cncf.io/networks: <network>``.

Each NAD is named as its network and carries the labels ``app.kubernetes.io/managed-by: netkit``
and ``netkit.io/l2network: <network>``; its ``spec.config`` is netkit-cni's configuration
(CNI 1.0.0, the network, the IPAM the L2Network names). Only NADs with those labels are ever
changed or deleted: one of that name that somebody else made is an AttachmentConflict, left
alone (the network itself runs on). A
network deleted, in conflict, or no longer naming a namespace loses its NAD there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netkit.control.core.conditions import Problem
from netkit.control.core.l2desired import NetworkObject

__all__ = ["NAD_GROUP", "NAD_PLURAL", "NAD_VERSION", "NETWORK_LABEL", "NadWrites", "nad_config", "nad_writes"]

NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
NETWORK_LABEL = "netkit.io/l2network"
MANAGED_BY = ("app.kubernetes.io/managed-by", "netkit")
Obj = dict[str, Any]


def nad_config(network: str, ipam: Mapping[str, Any]) -> str:
    """netkit-cni's configuration for ``network``, as the NAD's ``spec.config`` (a JSON string)."""
    conf = {
        "cniVersion": "1.0.0",
        "name": network,
        "type": "netkit-cni",
        "network": network,
        # Multus passes a pod's requested addresses (the annotation's "ips") as runtimeConfig,
        # which netkit-cni hands to the IPAM plugin with the rest (static and host-local take it)
        "capabilities": {"ips": True},
        "ipam": dict(ipam),
    }
    return json.dumps(conf, sort_keys=True)


@dataclass(frozen=True)
class NadWrites:
    puts: tuple[Obj, ...]  # whole NADs to create or replace
    deletes: tuple[tuple[str, str], ...]  # (namespace, name) of ours nobody wants
    problems: dict[str, tuple[Problem, ...]]  # network -> why a NAD of it is not written


def _ours(nad: Mapping[str, Any]) -> bool:
    labels = (nad.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and bool(labels.get(NETWORK_LABEL))


def nad_writes(
    objects: Iterable[NetworkObject], blocked: Iterable[str], current: Iterable[Mapping[str, Any]]
) -> NadWrites:
    """From the NADs the API holds (``current``, every namespace) to the ones the live, unblocked
    (not in Conflict) objects want."""
    have: dict[tuple[str, str], Mapping[str, Any]] = {}
    for nad in current:
        meta = nad.get("metadata") or {}
        have[(str(meta.get("namespace")), str(meta.get("name")))] = nad
    skip = set(blocked)
    want: dict[tuple[str, str], Obj] = {}
    problems: dict[str, list[Problem]] = {}
    for o in objects:
        attachment = o.spec.get("attachment")
        if o.deleting or o.name in skip or not attachment:
            continue
        config = nad_config(o.name, attachment.get("ipam") or {})
        for ns in attachment.get("namespaces") or ():
            key = (str(ns), o.name)
            there = have.get(key)
            if there is not None and not _ours(there):
                problems.setdefault(o.name, []).append(
                    Problem(
                        "AttachmentConflict",
                        f"NetworkAttachmentDefinition {ns}/{o.name} exists and is not netkit's",
                    )
                )
                continue
            want[key] = {
                "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {
                    "name": o.name,
                    "namespace": str(ns),
                    "labels": {MANAGED_BY[0]: MANAGED_BY[1], NETWORK_LABEL: o.name},
                },
                "spec": {"config": config},
            }
    puts = tuple(
        w for k, w in sorted(want.items()) if k not in have or (have[k].get("spec") or {}) != w["spec"]
    )
    deletes = tuple(sorted(k for k, nad in have.items() if _ours(nad) and k not in want))
    return NadWrites(puts, deletes, {k: tuple(v) for k, v in problems.items()})
