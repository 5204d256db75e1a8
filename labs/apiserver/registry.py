"""The resources the lab API server serves: the built-in kinds netkit needs (Namespaces, Nodes,
ConfigMaps, Secrets, Services, Events, Leases, CustomResourceDefinitions) and every resource a
CRD registers at run time."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTIN", "Registry", "Resource", "from_crd"]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # a status subresource
    schema: Mapping[str, Any] | None = None  # openAPIV3Schema (custom resources)
    columns: tuple[Mapping[str, Any], ...] = ()  # additionalPrinterColumns
    custom: bool = False
    crd: str = ""  # the CRD's name

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def key(self, namespace: str | None, name: str = "") -> str:
        """The etcd key (or, without a name, the prefix of a collection)."""
        collection = f"/registry/{self.group or 'core'}/{self.plural}/"
        if not self.namespaced:
            return collection + name
        return f"{collection}{namespace}/{name}" if namespace else collection  # all namespaces

    def api_resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            out["shortNames"] = list(self.short_names)
        if self.categories:
            out["categories"] = list(self.categories)
        return out


def _core(
    kind: str, plural: str, namespaced: bool, short: tuple[str, ...] = (), status: bool = False
) -> Resource:
    return Resource("", "v1", kind, plural, namespaced, short_names=short, status=status)


BUILTIN = (
    _core("Namespace", "namespaces", False, ("ns",), status=True),
    _core("Node", "nodes", False, ("no",), status=True),
    _core("Pod", "pods", True, ("po",), status=True),  # none run here; `kubectl describe node` lists them
    _core("ConfigMap", "configmaps", True, ("cm",)),
    _core("Secret", "secrets", True),
    _core("Service", "services", True, ("svc",), status=True),
    _core("Event", "events", True, ("ev",)),
    _core("ServiceAccount", "serviceaccounts", True, ("sa",)),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    Resource("events.k8s.io", "v1", "Event", "events", True, short_names=("ev",)),
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        short_names=("crd", "crds"),
        status=True,
    ),
)


def from_crd(crd: Mapping[str, Any]) -> list[Resource]:
    """The resources (one per served version) a CustomResourceDefinition registers."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for v in spec["versions"]:
        if not v.get("served", True):
            continue
        out.append(
            Resource(
                spec["group"],
                v["name"],
                names["kind"],
                names["plural"],
                spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                status="status" in (v.get("subresources") or {}),
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                columns=tuple(v.get("additionalPrinterColumns", ())),
                custom=True,
                crd=crd["metadata"]["name"],
            )
        )
    return out


@dataclass
class Registry:
    """Resources by (group, version, plural); CRDs add and remove theirs (thread-safe)."""

    resources: dict[tuple[str, str, str], Resource] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for r in BUILTIN:
            self.resources[(r.group, r.version, r.plural)] = r

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        with self.lock:
            return self.resources.get((group, version, plural))

    def all(self) -> list[Resource]:
        with self.lock:
            return list(self.resources.values())

    def groups(self) -> Iterator[tuple[str, list[str]]]:
        """(group, versions) of every named group, in name order."""
        by_group: dict[str, list[str]] = {}
        for r in self.all():
            if r.group:
                versions = by_group.setdefault(r.group, [])
                if r.version not in versions:
                    versions.append(r.version)
        yield from sorted(by_group.items())

    def register(self, crd: Mapping[str, Any]) -> None:
        with self.lock:
            name = crd["metadata"]["name"]
            for key in [k for k, r in self.resources.items() if r.crd == name]:
                del self.resources[key]
            for r in from_crd(crd):
                self.resources[(r.group, r.version, r.plural)] = r

    def unregister(self, crd_name: str) -> list[Resource]:
        with self.lock:
            gone = [k for k, r in self.resources.items() if r.crd == crd_name]
            return [self.resources.pop(k) for k in gone]
