"""The ``netkit.io/v1alpha1`` API (pure): every kind's CustomResourceDefinition from one source.

The kinds, all cluster-scoped, all in the category ``netkit`` (``kubectl get netkit``):

- ``L2Network`` (``l2net``): a VXLAN or 802.1Q segment on the nodes a selector picks, rolled out
  at most ``maxUnavailable`` nodes at a time, each node probing and rolling back on its own.
- ``BGPTopology`` (``bgptopo``): the route-reflector planner's policy, the AS, the speaker the
  nodes run (BIRD, FRR, or Calico's resources) and how a live mesh is migrated.
- ``DNSCache`` (``dnscache``): the node-local cache's configuration.
- ``NodeState`` (``nodestate``): one per node, written by that node's agent only: what it applied
  of each object (with the generation), what it observed, conditions and a heartbeat; what the
  controllers aggregate (as kubernetes-nmstate's enactments).

Schemas are structural and reject what can be rejected statically: ranges, enums, formats and
one-of rules as CEL ``x-kubernetes-validations``. Conditions follow the API conventions
(``metav1.Condition``). What only the cluster can tell (two objects with one VNI, a topology
whose nodes lack the failure-domain label) is a controller's Degraded condition, not a schema
rule. ``deploy/crds/`` holds the output (``python deploy/crds/generate.py``); a test fails when
it drifts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CATEGORY", "GROUP", "KINDS", "VERSION", "condition_schema", "definitions"]

GROUP = "netkit.io"
VERSION = "v1alpha1"
CATEGORY = "netkit"

Schema = dict[str, Any]

# -- building blocks -------------------------------------------------------------------------------

_IFNAME = r"^[A-Za-z0-9_.:@-]{1,15}$"  # IFNAMSIZ - 1, no '/' or whitespace
_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_LABEL_KEY = r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
_MAC = r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"
_HOST_PORT = r"^(\[[0-9a-fA-F:.]+\]|[0-9.]+):[0-9]{1,5}$"  # 169.254.20.10:53, [fd00::a]:53
_HOST_OPT_PORT = r"^(\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?|[0-9.]+(:[0-9]{1,5})?|[0-9a-fA-F:]+)$"
_DNS_LABEL_ANY = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_ZONE = rf"^(\.|({_DNS_LABEL_ANY}\.)*{_DNS_LABEL_ANY}\.?)$"
_PERCENT_OR_INT = r"^(100|[1-9]?[0-9])%$"


def _int(lo: int, hi: int, description: str, default: int | None = None) -> Schema:
    s: Schema = {"type": "integer", "minimum": lo, "maximum": hi, "description": description}
    if hi > 2**31 - 1:
        s["format"] = "int64"
    if default is not None:
        s["default"] = default
    return s


def _str(description: str, *, pattern: str | None = None, max_length: int | None = None) -> Schema:
    s: Schema = {"type": "string", "description": description}
    if pattern is not None:
        s["pattern"] = pattern
    if max_length is not None:
        s["maxLength"] = max_length
    return s


def _enum(description: str, *values: str, default: str | None = None) -> Schema:
    s: Schema = {"type": "string", "enum": list(values), "description": description}
    if default is not None:
        s["default"] = default
    return s


def _ip(description: str) -> Schema:
    # CEL's isIP() (Kubernetes 1.31+) would be exact; a format keeps 1.29 and 1.30 servers working
    return {
        "type": "string",
        "maxLength": 45,
        "description": description,
        "x-kubernetes-validations": [
            {
                "rule": "self.matches('^[0-9.]+$') || self.matches('^[0-9a-fA-F:.]+$')",
                "message": "must be an IP address",
            }
        ],
    }


def _obj(
    description: str,
    properties: dict[str, Schema],
    *,
    required: list[str] | None = None,
    rules: list[tuple[str, str]] | None = None,
) -> Schema:
    s: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        s["required"] = required
    if rules:
        s["x-kubernetes-validations"] = [{"rule": r, "message": m} for r, m in rules]
    return s


def _list(
    description: str,
    items: Schema,
    *,
    max_items: int,
    list_type: str = "atomic",
    keys: list[str] | None = None,
) -> Schema:
    s: Schema = {
        "type": "array",
        "description": description,
        "items": items,
        "maxItems": max_items,
        "x-kubernetes-list-type": list_type,
    }
    if keys:
        s["x-kubernetes-list-map-keys"] = keys
    return s


def _preserved(description: str) -> Schema:
    """An object whose shape another module owns (the planner's plan, the speaker's config)."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": description}


def _label_selector(description: str) -> Schema:
    """``metav1.LabelSelector``: matchLabels and matchExpressions; empty selects every node."""
    requirement = _obj(
        "a label requirement",
        {
            "key": _str("the label key", pattern=_LABEL_KEY, max_length=317),
            "operator": _enum("how the key relates to the values", "In", "NotIn", "Exists", "DoesNotExist"),
            "values": _list("values for In and NotIn", _str("a label value", max_length=63), max_items=64),
        },
        required=["key", "operator"],
        rules=[
            (
                "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0"
                " : !has(self.values) || size(self.values) == 0",
                "In and NotIn need values; Exists and DoesNotExist take none",
            )
        ],
    )
    return _obj(
        description,
        {
            "matchLabels": {
                "type": "object",
                "description": "labels a node must carry, key: value",
                "additionalProperties": {"type": "string", "maxLength": 63},
                "maxProperties": 64,
            },
            "matchExpressions": _list(
                "requirements a node must meet, all of them", requirement, max_items=64
            ),
        },
    )


def condition_schema() -> Schema:
    """``metav1.Condition``, as the API conventions define it."""
    return _obj(
        "the latest observation of one aspect of the object's state",
        {
            "type": _str(
                "Ready, Progressing, Degraded, ...",
                max_length=316,
                pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            ),
            "status": _enum("whether the condition holds", "True", "False", "Unknown"),
            "observedGeneration": _int(0, 2**63 - 1, "the .metadata.generation the condition was set for"),
            "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "when the status last changed",
            },
            "reason": _str(
                "a CamelCase word for programs",
                max_length=1024,
                pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            ),
            "message": _str(
                "what a person should know, naming the other object in a conflict", max_length=32768
            ),
        },
        required=["type", "status", "lastTransitionTime", "reason", "message"],
    )


def _status(description: str, extra: dict[str, Schema]) -> Schema:
    return _obj(
        description,
        {
            "observedGeneration": _int(0, 2**63 - 1, "the .metadata.generation this status describes"),
            "conditions": _list(
                "Ready, Progressing and Degraded",
                condition_schema(),
                max_items=16,
                list_type="map",
                keys=["type"],
            ),
            **extra,
        },
    )


def _nodes_status() -> dict[str, Schema]:
    return {
        "nodesSelected": _int(0, 100_000, "nodes the selector picks"),
        "nodesUpdated": _int(0, 100_000, "nodes told the current generation"),
        "nodesReady": _int(0, 100_000, "nodes that applied it and pass its probes"),
        "nodesFailed": _list(
            "nodes that failed to apply it (and rolled back)", _str("a node name"), max_items=100_000
        ),
    }


def _max_unavailable() -> Schema:
    return {
        "x-kubernetes-int-or-string": True,
        "description": "nodes changed at once in a rollout: a number or a percentage of the selected nodes",
        "default": 1,
        "x-kubernetes-validations": [
            {
                "rule": "type(self) == int ? self >= 1 : self.matches('"
                + _PERCENT_OR_INT
                + "') && self != '0%'",
                "message": "a number of at least 1 or a percentage from 1% to 100%",
            }
        ],
    }


def _rollout_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodesSelected"},
        {"name": "Updated", "type": "integer", "jsonPath": ".status.nodesUpdated"},
    ]


def _condition_columns() -> list[dict[str, Any]]:
    """Ready, its reason (``-o wide``) and the age: the last columns of every kind."""
    return [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {
            "name": "Reason",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


# -- the kinds -------------------------------------------------------------------------------------


def _l2network() -> tuple[Schema, list[dict[str, Any]]]:
    endpoint = _obj(
        "a remote MAC (and its IP) known in advance: a static FDB and neighbour entry",
        {
            "mac": _str("the MAC address", pattern=_MAC),
            "ip": _ip("its IP address (optional)"),
            "node": _str("the node behind which it lives", max_length=253),
        },
        required=["mac", "node"],
    )
    probe = _obj(
        "a check every node runs after applying: failing, the node rolls back",
        {
            "address": _ip(
                "an IPv4 address that must answer ARP on the network's bridge of every node (the "
                "bridge needs no address of its own: the request comes from 169.254.255.254)"
            ),
            "timeoutSeconds": _int(1, 300, "how long the node waits for the answer", default=5),
        },
        required=["address"],
    )
    per_node = _obj(
        "the underlay interface on the nodes a selector picks",
        {
            "nodeSelector": _label_selector("the nodes this entry applies to"),
            "interface": _str("the interface on those nodes", pattern=_IFNAME),
        },
        required=["nodeSelector", "interface"],
    )
    spec = _obj(
        "a VXLAN or 802.1Q VLAN segment: a bridge per network on every selected node",
        {
            "type": _enum(
                "vxlan (a VNI over the underlay) or vlan (an 802.1Q id on it)",
                "vxlan",
                "vlan",
                default="vxlan",
            ),
            "vni": _int(1, 16_777_215, "the VXLAN network identifier, unique in the cluster"),
            "vlan": _int(1, 4094, "the 802.1Q VLAN id, unique per underlay"),
            "underlay": _obj(
                "where the segment's frames leave the node",
                {
                    "interface": _str(
                        "the interface on every node (default for vxlan: the interface "
                        "holding the node's InternalIP)",
                        pattern=_IFNAME,
                    ),
                    "perNode": _list(
                        "per-node interfaces, first match wins over interface", per_node, max_items=64
                    ),
                },
            ),
            "port": _int(1, 65535, "the VXLAN UDP port", default=4789),
            "mtu": _int(
                68,
                65535,
                "the bridge MTU (default: the underlay's, less 50 for VXLAN over IPv4, 70 over IPv6)",
            ),
            "nodeSelector": _label_selector("the nodes that join the network (empty: every node)"),
            "endpoints": _list("remote MACs known in advance", endpoint, max_items=4096),
            "ports": _list(
                "host interfaces the bridge enslaves (a server's NIC, a veth): any other port on the "
                "bridge is detached; pods join through the CNI plugin instead",
                _obj(
                    "an interface",
                    {
                        "interface": _str("its name", pattern=_IFNAME),
                        "node": _str(
                            "the node that has it (empty: every node of the network)", max_length=253
                        ),
                    },
                    required=["interface"],
                ),
                max_items=256,
            ),
            "maxUnavailable": _max_unavailable(),
            "probes": _list("checks after applying on each node", probe, max_items=16),
            "attachment": _obj(
                "pods join through netkit-cni: a Multus NetworkAttachmentDefinition named as the "
                "network in each namespace, for the annotation k8s.v1.cni.cncf.io/networks",
                {
                    "namespaces": _list(
                        "where the NetworkAttachmentDefinition is made",
                        _str("a namespace", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63),
                        max_items=256,
                    ),
                    "ipam": {
                        "type": "object",
                        "description": "the CNI IPAM configuration the pods get their addresses from "
                        "(host-local, static, whereabouts ...), as in a CNI configuration's ipam",
                        "required": ["type"],
                        "properties": {"type": _str("the IPAM plugin", max_length=63)},
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                },
                required=["namespaces", "ipam"],
            ),
        },
        rules=[
            (
                "self.type == 'vxlan' ? has(self.vni) && !has(self.vlan) : has(self.vlan) && !has(self.vni)",
                "a vxlan network needs vni (and no vlan); a vlan network needs vlan (and no vni)",
            ),
            (
                "self.type == 'vlan' ? has(self.underlay) && (has(self.underlay.interface) || "
                "has(self.underlay.perNode)) : true",
                "a vlan network needs underlay.interface or underlay.perNode",
            ),
            (
                "self.type == 'vlan' ? !has(self.endpoints) : true",
                "endpoints are for vxlan networks",
            ),
            (
                "!has(oldSelf.type) || self.type == oldSelf.type",
                "type cannot be changed: create another network",
            ),
        ],
    )
    columns = [
        {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
        {"name": "VNI", "type": "integer", "jsonPath": ".spec.vni"},
        {"name": "VLAN", "type": "integer", "jsonPath": ".spec.vlan"},
        *_rollout_columns(),
        *_condition_columns(),
    ]
    return _kind_schema(spec, _status("what the nodes applied, and conditions", _nodes_status())), columns


def _bgptopology() -> tuple[Schema, list[dict[str, Any]]]:
    top = _obj(
        "levels: 2 only: how the top level is chosen",
        {
            "failureDomainLabel": _str(
                "the node label naming a failure domain", pattern=_LABEL_KEY, max_length=317
            )
            | {"default": "topology.kubernetes.io/zone"},
            "reflectorsPerDomain": _int(1, 64, "top reflectors chosen in every domain", default=1),
        },
    )
    policy = _obj(
        "how reflectors are chosen (the planner keeps the plan in force: a new node never reshuffles them)",
        {
            "failureDomainLabel": _str(
                "the node label naming a failure domain", pattern=_LABEL_KEY, max_length=317
            )
            | {"default": "topology.kubernetes.io/zone"},
            "redundancy": _int(1, 8, "reflectors per client, each in a distinct failure domain", default=2),
            "reflectorsPerDomain": _int(
                1, 64, "reflectors chosen in every domain that has candidates", default=1
            ),
            "mode": _enum(
                "in-node: any node may reflect; dedicated: only nodes labelled "
                "netkit.io/route-reflector=true, which carry no workload routes",
                "in-node",
                "dedicated",
                default="in-node",
            ),
            "clusterId": _enum(
                "per-reflector: its router id; shared: groups of `redundancy` reflectors share one",
                "per-reflector",
                "shared",
                default="per-reflector",
            ),
            "levels": _int(1, 2, "1, or 2: clients -> leaf reflectors -> top reflectors", default=1),
            "top": top,
        },
        rules=[("self.levels == 2 || !has(self.top)", "top is for levels: 2")],
    )
    spec = _obj(
        "route reflectors in place of the iBGP full mesh, planned from the Node objects",
        {
            "asn": _int(1, 4_294_967_295, "the cluster's AS number"),
            "speaker": _enum(
                "bird or frr: the agent configures the node's speaker (the one its flags name: "
                "nodes may mix both); calico: calico/node runs the sessions from the Calico "
                "BGPPeer and BGPConfiguration objects and Node labels the controller writes",
                "bird",
                "frr",
                "calico",
            ),
            "nodeSelector": _label_selector("the nodes that speak BGP (empty: every node)"),
            "topology": _enum(
                "mesh or reflectors: what the cluster should run", "mesh", "reflectors", default="reflectors"
            ),
            "policy": policy,
            "timers": _obj(
                "the sessions' timers (default: RFC 4271's)",
                {
                    "holdSeconds": _int(3, 65535, "hold time", default=90),
                    "keepaliveSeconds": _int(1, 21845, "keepalive interval", default=30),
                    "connectRetrySeconds": _int(1, 3600, "connect retry interval", default=5),
                },
                rules=[
                    (
                        "self.keepaliveSeconds * 3 <= self.holdSeconds",
                        "keepalive must be at most a third of hold",
                    )
                ],
            ),
            "migration": _obj(
                "how a running mesh becomes the planned topology",
                {
                    "strategy": _enum(
                        "make-before-break: new sessions beside the old, old ones removed only "
                        "when every node holds every prefix over the new",
                        "make-before-break",
                        default="make-before-break",
                    ),
                    "batch": _int(1, 1000, "nodes changed per step", default=4),
                    "stepTimeoutSeconds": _int(
                        10,
                        3600,
                        "a step not converged by then stops the migration (nothing is removed)",
                        default=120,
                    ),
                },
            ),
        },
        required=["asn", "speaker"],
        rules=[("!has(oldSelf.asn) || self.asn == oldSelf.asn", "asn cannot be changed in place")],
    )
    status = _status(
        "the plan in force and the migration's progress",
        {
            "reflectors": _list("the nodes that reflect", _str("a node name"), max_items=1000),
            "sessions": _int(0, 2**31 - 1, "iBGP sessions in the plan"),
            "plan": _preserved(
                "the plan in force, where its sessions run (`netkit bgp plan` output): what the "
                "planner keeps, and what a migration starts from"
            ),
            "migration": _preserved("the migration under way: its target plan, the step and when it started"),
            "phase": _enum("where a migration stands", "Planned", "Migrating", "Converged", "Stopped"),
            **_nodes_status(),
        },
    )
    columns: list[dict[str, Any]] = [
        {"name": "ASN", "type": "integer", "jsonPath": ".spec.asn"},
        {"name": "Speaker", "type": "string", "jsonPath": ".spec.speaker"},
        {"name": "Topology", "type": "string", "jsonPath": ".spec.topology"},
        {"name": "Reflectors", "type": "string", "jsonPath": ".status.reflectors", "priority": 1},
        {"name": "Sessions", "type": "integer", "jsonPath": ".status.sessions"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        *_condition_columns(),
    ]
    return _kind_schema(spec, status), columns


def _dnscache() -> tuple[Schema, list[dict[str, Any]]]:
    service = _obj(
        "a Service whose ClusterIP is the upstream (kube-dns)",
        {
            "namespace": _str("its namespace", pattern=_DNS_LABEL),
            "name": _str("its name", pattern=_DNS_LABEL),
            "port": _int(1, 65535, "its port", default=53),
        },
        required=["namespace", "name"],
    )
    zone = _obj(
        "a stub zone with upstreams of its own",
        {
            "zone": _str("the zone", pattern=_ZONE, max_length=253),
            "upstreams": _list(
                "ADDR[:PORT] of its servers", _str("an upstream", pattern=_HOST_OPT_PORT), max_items=8
            ),
        },
        required=["zone", "upstreams"],
    )
    spec = _obj(
        "the node-local caching DNS responder on every selected node",
        {
            "listen": _list(
                "ADDR:PORT to answer on (the node-local address)",
                _str("a listen address", pattern=_HOST_PORT),
                max_items=8,
            )
            | {"default": ["169.254.20.10:53"]},
            "upstreamService": service,
            "upstreams": _list(
                "ADDR[:PORT] of upstream servers", _str("an upstream", pattern=_HOST_OPT_PORT), max_items=16
            ),
            "zones": _list("stub zones", zone, max_items=64, list_type="map", keys=["zone"]),
            "cache": _obj(
                "the cache",
                {
                    "size": _int(1, 50_000_000, "entries at most", default=10000),
                    "maxBytes": {
                        "x-kubernetes-int-or-string": True,
                        "pattern": r"^[0-9]+[KMG]?i?B?$",
                        "description": "memory at most, e.g. 64M",
                        "default": "48M",
                    },
                    "minTTL": _int(0, 604800, "lower TTL clamp, seconds", default=0),
                    "maxTTL": _int(0, 604800, "upper TTL clamp, seconds", default=86400),
                    "negativeMaxTTL": _int(
                        0, 604800, "upper TTL clamp of negative answers, seconds", default=3600
                    ),
                },
                rules=[("self.minTTL <= self.maxTTL", "minTTL must not be above maxTTL")],
            ),
            "serveStale": _obj(
                "answers past their TTL while upstreams fail (RFC 8767)",
                {
                    "windowSeconds": _int(
                        0, 30 * 86400, "how long past expiry an answer may be served", default=86400
                    ),
                    "ttlSeconds": _int(1, 86400, "the TTL of a stale answer", default=30),
                },
            ),
            "prefetch": {
                "type": "boolean",
                "default": True,
                "description": "refresh popular entries before they expire",
            },
            "nodeSelector": _label_selector("the nodes that run the cache (empty: every node)"),
        },
        rules=[
            (
                "has(self.upstreamService) != has(self.upstreams)",
                "give exactly one of upstreamService and upstreams",
            )
        ],
    )
    columns = [
        {"name": "Listen", "type": "string", "jsonPath": ".spec.listen"},
        *_rollout_columns(),
        *_condition_columns(),
    ]
    return _kind_schema(spec, _status("what the nodes run, and conditions", _nodes_status())), columns


def _nodestate() -> tuple[Schema, list[dict[str, Any]]]:
    applied = _obj(
        "what this node did with one object",
        {
            "kind": _enum("the object's kind", "L2Network", "BGPTopology", "DNSCache"),
            "name": _str("the object's name", max_length=253),
            "generation": _int(0, 2**63 - 1, "the object's .metadata.generation the node applied"),
            "state": _enum(
                "Applied: in the kernel/speaker/cache and probed; Failed: rolled back; "
                "Pending: not yet; Removed: deleted from the node",
                "Applied",
                "Failed",
                "Pending",
                "Removed",
            ),
            "message": _str("what went wrong, or what was done", max_length=4096),
            "writes": _int(0, 2**31 - 1, "changes the last round made"),
            "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "when state changed",
            },
        },
        required=["kind", "name", "state"],
    )
    member = _obj(
        "a node of the network and its VTEP",
        {"node": _str("the node", max_length=253), "vtep": _ip("its VTEP address (vxlan)")},
        required=["node"],
    )
    l2 = _obj(
        "one network as this node runs it: resolved by the controller for this node, at the "
        "generation the rollout lets it have",
        {
            "name": _str("the L2Network", max_length=253),
            "generation": _int(1, 2**63 - 1, "its .metadata.generation this entry is"),
            "type": _enum("vxlan or vlan", "vxlan", "vlan"),
            "vni": _int(1, 16_777_215, "the VNI (vxlan)"),
            "vlan": _int(1, 4094, "the VLAN id (vlan)"),
            "underlay": _str("the underlay interface on this node (empty: the default)", pattern=_IFNAME),
            "port": _int(1, 65535, "the VXLAN UDP port"),
            "mtu": _int(68, 65535, "the bridge MTU (empty: from the underlay)"),
            "members": _list("every node of the network", member, max_items=100_000),
            "endpoints": _list(
                "remote MACs known in advance",
                _obj(
                    "a remote MAC",
                    {
                        "mac": _str("the MAC", pattern=_MAC),
                        "ip": _ip("its IP"),
                        "node": _str("its node", max_length=253),
                    },
                    required=["mac", "node"],
                ),
                max_items=4096,
            ),
            "ports": _list(
                "host interfaces the bridge enslaves on this node",
                _str("a name", pattern=_IFNAME),
                max_items=256,
            ),
            "probes": _list(
                "checks after applying: one failing, the node rolls back and reports Failed",
                _obj(
                    "an address that must answer ARP on the network's bridge",
                    {
                        "address": _ip("the address"),
                        "timeoutSeconds": _int(1, 300, "how long the node waits"),
                    },
                    required=["address"],
                ),
                max_items=16,
            ),
        },
        required=["name", "generation", "type"],
    )
    spec = _obj(
        "the node this state belongs to (the object is named after it) and what the controller "
        "publishes for it: the agent applies exactly this, and keeps it when the API is unreachable",
        {
            "nodeName": _str("the Node's name", max_length=253),
            "l2Networks": _list(
                "the networks this node runs", l2, max_items=4096, list_type="map", keys=["name"]
            ),
            "bgp": _obj(
                "the node's BGP speaker configuration: the step of the BGPTopology's migration in force",
                {
                    "name": _str("the BGPTopology", max_length=253),
                    "generation": _int(1, 2**63 - 1, "its .metadata.generation this is"),
                    "revision": _str("names the step's topology; the agent reports it back", max_length=64),
                    "step": _int(0, 100_000, "the migration step (0: none under way)"),
                    "steps": _int(0, 100_000, "steps of the migration"),
                    "speaker": _enum("what runs on the node", "bird", "frr", "calico"),
                    "config": _preserved(
                        "the speaker's configuration: router id, neighbours, prefixes, timers"
                    ),
                },
                required=["name", "generation", "revision", "speaker", "config"],
            ),
            "dns": _obj(
                "the node-local cache this node runs (absent: none)",
                {
                    "name": _str("the DNSCache", max_length=253),
                    "generation": _int(1, 2**63 - 1, "its .metadata.generation this is"),
                    "config": _preserved(
                        "the cache's configuration, as the keys of `netkit dns serve -f` (validated "
                        "by its loader, by the controller and again by the agent)"
                    ),
                },
                required=["name", "generation", "config"],
            ),
        },
        required=["nodeName"],
        rules=[("self.nodeName == oldSelf.nodeName", "nodeName cannot be changed")],
    )
    status = _status(
        "written by the node's agent only",
        {
            "heartbeatTime": {
                "type": "string",
                "format": "date-time",
                "description": "the agent's last report: stale means the agent is gone, not the network",
            },
            "agentVersion": _str("the agent's version", max_length=64),
            "applied": _list(
                "every object this node applies",
                applied,
                max_items=4096,
                list_type="map",
                keys=["kind", "name"],
            ),
            "bgp": _obj(
                "the node's BGP speaker as observed",
                {
                    "revision": _str("the spec.bgp revision the speaker runs", max_length=64),
                    "state": _enum("Applied, or Failed: the speaker refused it", "Applied", "Failed"),
                    "message": _str("what went wrong, or what was done", max_length=4096),
                    "sessionsEstablished": _int(0, 100_000, "sessions Established"),
                    "sessionsConfigured": _int(0, 100_000, "sessions configured"),
                    "prefixes": _int(0, 2**31 - 1, "prefixes in the node's table"),
                    "routes": _list(
                        "every prefix the speaker learnt and the neighbours it came from (what a "
                        "migration step is gated on)",
                        _obj(
                            "a prefix",
                            {
                                "prefix": _str("the prefix", max_length=64),
                                "via": _list(
                                    "neighbour addresses", _str("an address", max_length=64), max_items=64
                                ),
                            },
                            required=["prefix"],
                        ),
                        max_items=100_000,
                    ),
                },
            ),
            "endpoints": _list(
                "the pods netkit-cni attached on this node (the controller makes them known "
                "endpoints of their network on every other node)",
                _obj(
                    "an attached pod interface",
                    {
                        "network": _str("the L2Network", max_length=253),
                        "pod": _str("namespace/name, when the runtime said", max_length=317),
                        "interface": _str("its name in the pod", max_length=15),
                        "mac": _str("its MAC", max_length=17),
                        "ips": _list(
                            "its addresses, with prefix length",
                            _str("an address", max_length=64),
                            max_items=16,
                        ),
                    },
                    required=["network", "mac"],
                ),
                max_items=4096,
            ),
            "dns": _obj(
                "the node-local cache as observed",
                {
                    "serving": {
                        "type": "boolean",
                        "description": "the cache answers on its listen addresses",
                    },
                    "configGeneration": _int(0, 2**63 - 1, "the DNSCache generation it runs"),
                },
            ),
            "doctor": _list(
                "the node's checks (netkit doctor) as last run; their Node conditions carry the evidence",
                _obj(
                    "a check",
                    {
                        "check": _str("its name", max_length=64),
                        "status": _enum("what it found", "ok", "problem", "unknown", "error"),
                        "reason": _str("the condition's reason", max_length=128),
                        "since": {"type": "string", "format": "date-time", "description": "since when"},
                    },
                    required=["check", "status"],
                ),
                max_items=64,
                list_type="map",
                keys=["check"],
            ),
        },
    )
    columns = [
        {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
        {"name": "Heartbeat", "type": "date", "jsonPath": ".status.heartbeatTime"},
        *_condition_columns(),
    ]
    return _kind_schema(spec, status), columns


def _kind_schema(spec: Schema, status: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }


# kind -> (plural, singular short names, builder)
KINDS: dict[str, tuple[str, list[str], Any]] = {
    "L2Network": ("l2networks", ["l2net"], _l2network),
    "BGPTopology": ("bgptopologies", ["bgptopo"], _bgptopology),
    "DNSCache": ("dnscaches", ["dnsc"], _dnscache),
    "NodeState": ("nodestates", ["nodestate", "nks"], _nodestate),
}


def definitions() -> list[dict[str, Any]]:
    """Every kind's ``apiextensions.k8s.io/v1`` CustomResourceDefinition, in KINDS order."""
    out = []
    for kind, (plural, short, build) in KINDS.items():
        schema, columns = build()
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "netkit"}},
                "spec": {
                    "group": GROUP,
                    "scope": "Cluster",
                    "names": {
                        "kind": kind,
                        "listKind": f"{kind}List",
                        "plural": plural,
                        "singular": kind.lower(),
                        "shortNames": short,
                        "categories": [CATEGORY],
                    },
                    "versions": [
                        {
                            "name": VERSION,
                            "served": True,
                            "storage": True,
                            "subresources": {"status": {}},
                            "additionalPrinterColumns": columns,
                            "schema": {"openAPIV3Schema": schema},
                        }
                    ],
                },
            }
        )
    return out
