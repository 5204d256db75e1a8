"""Discovery and OpenAPI documents: ``/version``, ``/api``, ``/api/v1``, ``/apis``,
``/apis/GROUP``, ``/apis/GROUP/VERSION``, ``/openapi/v3`` and ``/openapi/v3/apis/GROUP/VERSION``
(the custom kinds' schemas, tagged with their group-version-kind, as kubectl explain and apply
read them); ``/healthz``, ``/livez``, ``/readyz``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labs.apiserver.server import ApiServer

__all__ = ["document"]

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-netkit-lab",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "",
    "compiler": "",
    "platform": "linux/amd64",
}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def _resources(server: ApiServer, group: str, version: str) -> dict[str, Any] | None:
    found = [r for r in server.registry.all() if r.group == group and r.version == version]
    if not found:
        return None
    resources = []
    for r in sorted(found, key=lambda r: r.plural):
        resources.append(r.api_resource())
        if r.status:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _openapi(server: ApiServer, group: str, version: str) -> dict[str, Any] | None:
    found = [r for r in server.registry.all() if r.group == group and r.version == version]
    if not found:
        return None
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for r in found:
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        where = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
        gvk = {"group": group, "version": version, "kind": r.kind}
        params = [
            {"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for p in ("dryRun", "fieldManager", "fieldValidation")
        ]
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {}}
        paths[f"{where}/{{name}}"] = {
            verb: {**op, "x-kubernetes-action": action, "operationId": f"{verb}{r.kind}"}
            for verb, action in (("get", "get"), ("put", "put"), ("patch", "patch"), ("delete", "delete"))
        }
        paths[where] = {
            "get": {**op, "x-kubernetes-action": "list", "operationId": f"list{r.kind}"},
            "post": {**op, "x-kubernetes-action": "post", "operationId": f"create{r.kind}"},
        }
        name = (
            ".".join(reversed(group.split("."))) + f".{version}.{r.kind}"
            if group
            else f"io.k8s.api.core.v1.{r.kind}"
        )
        schema = (
            dict(r.schema)
            if r.schema is not None
            else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        )
        schema["x-kubernetes-group-version-kind"] = [{"group": group, "version": version, "kind": r.kind}]
        schemas[name] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document(server: ApiServer, parts: list[str]) -> Any | None:
    """The document at ``/`` + ``parts``, or None when the path is not a discovery path."""
    if parts in (["healthz"], ["livez"], ["readyz"]):
        return "ok"
    if parts == ["version"]:
        return VERSION
    if parts == ["api"]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{server.host}:{server.port}"}
            ],
        }
    if parts == ["api", "v1"]:
        return _resources(server, "", "v1")
    if parts == ["apis"]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group(g, vs) for g, vs in server.registry.groups()],
        }
    if len(parts) == 2 and parts[0] == "apis":
        for g, vs in server.registry.groups():
            if g == parts[1]:
                return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, vs)}
        return None
    if len(parts) == 3 and parts[0] == "apis":
        return _resources(server, parts[1], parts[2])
    if parts == ["openapi", "v3"]:
        paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
        for g, vs in server.registry.groups():
            for v in vs:
                paths[f"apis/{g}/{v}"] = {"serverRelativeURL": f"/openapi/v3/apis/{g}/{v}"}
        return {"paths": paths}
    if parts[:2] == ["openapi", "v3"] and parts[2:3] == ["api"] and len(parts) == 4:
        return _openapi(server, "", parts[3])
    if parts[:2] == ["openapi", "v3"] and parts[2:3] == ["apis"] and len(parts) == 5:
        return _openapi(server, parts[3], parts[4])
    return None
