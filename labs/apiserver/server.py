"""An API server speaking Kubernetes' wire protocol over etcd, for the lab and the tests: enough
of it that kubectl and the official Python client work unmodified.

Served: discovery (``/api``, ``/apis``, each group and version, ``/version``), ``/openapi/v3``
(a document per group-version, the custom kinds' schemas in it), CRUD of the built-in kinds in
``registry`` and of every kind a CRD registers while it runs; ``resourceVersion`` from etcd (409
on a stale update, AlreadyExists on a second create); ``generation`` bumped on spec changes only;
the status subresource (the main resource ignores status, ``/status`` takes only status);
finalizers and ``deletionTimestamp``; label and field selectors; ``limit``/``continue``; watches
with bookmarks and 410 after compaction; merge and JSON patch (415 for strategic merge on custom
resources); Tables with a CRD's printer columns for ``kubectl get``; a custom resource defaulted,
pruned and validated against its schema, every problem a cause of the 422.

Not served (refused with a Status, never faked): server-side apply, authentication (the lab
trusts its loopback clients), admission webhooks, aggregated APIs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from labs.apiserver import jsonpatch
from labs.apiserver.etcd import Compacted, Etcd
from labs.apiserver.registry import Registry, Resource
from labs.apiserver.schema import apply_defaults, prune, validate
from labs.apiserver.tables import table

__all__ = ["ApiError", "ApiServer", "fields_match", "selector_matches"]

log = logging.getLogger("netkit.lab.apiserver")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """A ``Status`` failure: ``reason`` and ``code`` as kube-apiserver sends them."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, dict(details or {})

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


def _not_found(r: Resource, name: str) -> ApiError:
    group = f"{r.plural}.{r.group}" if r.group else r.plural
    return ApiError(
        404, "NotFound", f'{group} "{name}" not found', {"name": name, "group": r.group, "kind": r.plural}
    )


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """A label selector in its query-string form: ``a=b,c!=d,e,!f,g in (h,i),j notin (k)``."""
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            member = key in labels and labels[key] in values
            if member != (op == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return "" if node is None else str(node)


def fields_match(selector: str, obj: Mapping[str, Any]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = re.split(r"!=|==|=", term, maxsplit=1)
        if (_field(obj, key.strip()) == value.strip()) == negate:
            return False
    return True


class ApiServer:
    """The API server on ``host:port`` (0: any free port), its objects in ``etcd``."""

    def __init__(self, etcd: Etcd, host: str = "127.0.0.1", port: int = 0) -> None:
        self.etcd = etcd
        self.registry = Registry()
        self.stopping = threading.Event()
        self._http = ThreadingHTTPServer((host, port), self._handler_class())
        self._http.daemon_threads = True
        self.host, self.port = host, int(self._http.server_address[1])
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ApiServer:
        for crd in self._list_raw(
            self.registry.find("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None
        ):
            self.registry.register(crd)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            r = self.registry.find("", "v1", "namespaces")
            assert r is not None
            if self.etcd.get(r.key(None, ns)) is None:
                self.create(r, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self._thread = threading.Thread(target=self._http.serve_forever, name="apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (watches included), as a dead server."""
        self.stopping.set()
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            open_now = list(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # -- storage -----------------------------------------------------------------------------

    def _decode(self, value: bytes, revision: int) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(value)
        obj["metadata"]["resourceVersion"] = str(revision)
        return obj

    def _list_raw(self, r: Resource | None, namespace: str | None) -> list[dict[str, Any]]:
        if r is None:
            return []
        kvs, _ = self.etcd.list_prefix(r.key(namespace))
        return [self._decode(kv.value, kv.mod_revision) for kv in kvs]

    def get(self, r: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        kv = self.etcd.get(r.key(namespace, name))
        if kv is None:
            raise _not_found(r, name)
        return self._decode(kv.value, kv.mod_revision)

    def list(self, r: Resource, namespace: str | None, query: Mapping[str, str]) -> dict[str, Any]:
        kvs, revision = self.etcd.list_prefix(r.key(namespace))
        items = [self._decode(kv.value, kv.mod_revision) for kv in kvs]
        items = [o for o in items if self._selected(o, query)]
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        page = items[start:]
        if limit and len(page) > limit:
            page = page[:limit]
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": f"{r.kind}List", "apiVersion": r.group_version, "metadata": meta, "items": page}

    @staticmethod
    def _selected(obj: Mapping[str, Any], query: Mapping[str, str]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        if query.get("labelSelector") and not selector_matches(query["labelSelector"], labels):
            return False
        return not (query.get("fieldSelector") and not fields_match(query["fieldSelector"], obj))

    def _check(
        self, r: Resource, obj: dict[str, Any], old: dict[str, Any] | None, strict: bool = False
    ) -> dict[str, Any]:
        """Defaults, pruning and schema validation of a custom resource (422 with every cause);
        ``strict`` (``fieldValidation=Strict``, what kubectl sends): an unknown field is a 400."""
        name = obj.get("metadata", {}).get("name", "")
        causes = []
        if r.schema is not None:
            obj, dropped = prune(apply_defaults(obj, r.schema), r.schema)
            if strict and dropped:
                text = ", ".join(f'unknown field "{d}"' for d in dropped)
                raise ApiError(400, "BadRequest", f"strict decoding error: {text}")
            body = {k: v for k, v in obj.items() if k != "metadata"}
            schema = {
                **r.schema,
                "properties": {k: v for k, v in r.schema.get("properties", {}).items() if k != "metadata"},
            }
            old_body = {k: v for k, v in old.items() if k != "metadata"} if old is not None else None
            problems = validate(body, schema) if old_body is None else validate(body, schema, old_body)
            causes = [{"reason": "FieldValueInvalid", "message": f"{m}", "field": p} for p, m in problems]
        if not _NAME.match(name):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain',
                }
            )
        if causes:
            text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
            kind_group = f"{r.kind}.{r.group}" if r.group else r.kind
            raise ApiError(
                422,
                "Invalid",
                f'{kind_group} "{name}" is invalid: {text}',
                {"name": name, "group": r.group, "kind": r.kind, "causes": causes},
            )
        return obj

    def create(
        self, r: Resource, namespace: str | None, obj: dict[str, Any], *, strict: bool = False
    ) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        obj["apiVersion"], obj["kind"] = r.group_version, r.kind
        if r.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
            ns = self.registry.find("", "v1", "namespaces")
            assert ns is not None
            if r.kind != "Namespace" and self.etcd.get(ns.key(None, namespace)) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
        else:
            meta.pop("namespace", None)
        if r.status and r.custom:
            obj.pop("status", None)
        obj = self._check(r, obj, None, strict)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        meta.pop("resourceVersion", None)
        meta.pop("deletionTimestamp", None)
        if r.kind == "CustomResourceDefinition":
            self._crd_valid(obj)
            obj = self._crd_accepted(obj)
        revision = self.etcd.create(r.key(namespace, meta["name"]), json.dumps(obj).encode())
        if revision is None:
            group = f"{r.plural}.{r.group}" if r.group else r.plural
            raise ApiError(
                409,
                "AlreadyExists",
                f'{group} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": r.group, "kind": r.plural},
            )
        if r.kind == "CustomResourceDefinition":
            self.registry.register(obj)
        meta["resourceVersion"] = str(revision)
        return obj

    @staticmethod
    def _crd_valid(crd: Mapping[str, Any]) -> None:
        """What a CRD needs before it can register anything (every missing piece named)."""
        spec: Mapping[str, Any] = crd["spec"] if isinstance(crd.get("spec"), Mapping) else {}
        names: Mapping[str, Any] = spec["names"] if isinstance(spec.get("names"), Mapping) else {}
        versions: list[Any] = spec["versions"] if isinstance(spec.get("versions"), list) else []
        causes = [f"spec.{k}: Required value" for k in ("group",) if not spec.get(k)]
        causes += [f"spec.names.{k}: Required value" for k in ("kind", "plural") if not names.get(k)]
        if not versions or not all(isinstance(v, Mapping) and v.get("name") for v in versions):
            causes.append("spec.versions: Required value: at least one version with a name")
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append("spec.versions: Invalid value: exactly one version must be the storage version")
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if not causes and crd["metadata"]["name"] != expected:
            causes.append(
                f'metadata.name: Invalid value: "{crd["metadata"]["name"]}": '
                'must be spec.names.plural+"."+spec.group'
            )
        if causes:
            name = crd["metadata"]["name"]
            raise ApiError(
                422,
                "Invalid",
                f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: {", ".join(causes)}',
                {
                    "name": name,
                    "kind": "CustomResourceDefinition",
                    "causes": [
                        {"reason": "FieldValueInvalid", "field": c.split(":")[0], "message": c}
                        for c in causes
                    ],
                },
            )

    @staticmethod
    def _crd_accepted(crd: dict[str, Any]) -> dict[str, Any]:
        t = now()
        crd["status"] = {
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {"type": t_, "status": "True", "reason": r_, "message": m_, "lastTransitionTime": t}
                for t_, r_, m_ in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        return crd

    def update(
        self,
        r: Resource,
        namespace: str | None,
        name: str,
        obj: dict[str, Any],
        *,
        subresource: str = "",
        strict: bool = False,
    ) -> dict[str, Any]:
        old = self.get(r, namespace, name)
        given = obj.get("metadata", {}).get("resourceVersion")
        if not given and r.custom:
            raise ApiError(
                422,
                "Invalid",
                f'{r.kind}.{r.group} "{name}" is invalid: metadata.resourceVersion: '
                "Invalid value: 0x0: must be specified for an update",
                {
                    "name": name,
                    "kind": r.kind,
                    "causes": [
                        {
                            "field": "metadata.resourceVersion",
                            "reason": "FieldValueInvalid",
                            "message": "must be specified for an update",
                        }
                    ],
                },
            )
        if given and given != old["metadata"]["resourceVersion"]:
            raise self._conflict(r, name)
        return self._write(r, namespace, name, old, obj, subresource, strict)

    def _conflict(self, r: Resource, name: str) -> ApiError:
        group = f"{r.plural}.{r.group}" if r.group else r.plural
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {group} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            {"name": name, "group": r.group, "kind": r.plural},
        )

    def _write(
        self,
        r: Resource,
        namespace: str | None,
        name: str,
        old: dict[str, Any],
        obj: dict[str, Any],
        subresource: str,
        strict: bool = False,
    ) -> dict[str, Any]:
        new = copy.deepcopy(obj)
        new["apiVersion"], new["kind"] = r.group_version, r.kind
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp", "generation"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        if subresource == "status":
            new = (
                {**old, "status": new.get("status")}
                if "status" in new
                else {k: v for k, v in old.items() if k != "status"}
            )
            new["metadata"] = old["metadata"]
        elif r.status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        new = self._check(r, new, old, strict)
        spec_changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }
        new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + (1 if spec_changed else 0)
        if r.kind == "CustomResourceDefinition":
            new = self._crd_accepted(new)
        key = r.key(namespace, name)
        revision_before = int(old["metadata"]["resourceVersion"])
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            if self.etcd.delete(key, revision_before) is None:
                raise self._conflict(r, name)
            self._after_delete(r, new)
            return new
        stored = {**new, "metadata": {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}}
        revision = self.etcd.update(key, json.dumps(stored).encode(), revision_before)
        if revision is None:
            raise self._conflict(r, name)
        if r.kind == "CustomResourceDefinition":
            self.registry.register(new)
        new["metadata"]["resourceVersion"] = str(revision)
        return new

    def patch(
        self,
        r: Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        body: bytes,
        subresource: str,
        strict: bool = False,
    ) -> dict[str, Any]:
        try:
            patch = json.loads(body)
        except ValueError:
            raise ApiError(400, "BadRequest", "the patch is not valid JSON") from None
        for _ in range(10):  # a patch is applied to the latest object: retried on a race
            old = self.get(r, namespace, name)
            if content_type.startswith("application/json-patch+json"):
                try:
                    new = jsonpatch.apply(old, patch)
                except jsonpatch.PatchError as exc:
                    raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {exc}") from None
            elif content_type.startswith("application/merge-patch+json") or (
                content_type.startswith("application/strategic-merge-patch+json") and not r.custom
            ):
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
                new = jsonpatch.merge(old, patch)
            elif content_type.startswith("application/strategic-merge-patch+json"):
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources; "
                    "use application/merge-patch+json or application/json-patch+json",
                )
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format: {content_type}",
                )
            given = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            if given and given != old["metadata"]["resourceVersion"]:
                raise self._conflict(r, name)
            new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
            try:
                return self._write(r, namespace, name, old, new, subresource, strict)
            except ApiError as exc:
                if exc.reason != "Conflict" or given:
                    raise
        raise self._conflict(r, name)

    def delete(self, r: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        for _ in range(10):
            old = self.get(r, namespace, name)
            meta = old["metadata"]
            revision = int(meta["resourceVersion"])
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
                stored = {**old, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
                new_revision = self.etcd.update(r.key(namespace, name), json.dumps(stored).encode(), revision)
                if new_revision is None:
                    continue
                meta["resourceVersion"] = str(new_revision)
                return old
            if self.etcd.delete(r.key(namespace, name), revision) is not None:
                self._after_delete(r, old)
                return old
        raise self._conflict(r, name)

    def _after_delete(self, r: Resource, obj: Mapping[str, Any]) -> None:
        if r.kind == "CustomResourceDefinition":
            for gone in self.registry.unregister(obj["metadata"]["name"]):
                for kv in self.etcd.list_prefix(gone.key(None))[0]:
                    self.etcd.delete(kv.key, kv.mod_revision)

    # -- watch -------------------------------------------------------------------------------

    def watch(self, r: Resource, namespace: str | None, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        rv = query.get("resourceVersion") or ""
        if rv in ("", "0"):
            listed = self.list(r, namespace, {k: v for k, v in query.items() if k.endswith("Selector")})
            for item in listed["items"]:
                yield {"type": "ADDED", "object": item}
            start = int(listed["metadata"]["resourceVersion"]) + 1
        else:
            start = int(rv) + 1
        prefix = r.key(namespace)
        try:
            for batch in self.etcd.watch(prefix, start, timeout=10):
                if self.stopping.is_set() or time.monotonic() > deadline:
                    return
                if isinstance(batch, int):
                    if bookmarks and batch:
                        yield {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": r.kind,
                                "apiVersion": r.group_version,
                                "metadata": {"resourceVersion": str(batch)},
                            },
                        }
                    continue
                for ev in batch:
                    if ev.type == "DELETE":
                        if ev.prev is None:
                            continue
                        obj = self._decode(ev.prev.value, ev.kv.mod_revision)
                        kind = "DELETED"
                    else:
                        obj = self._decode(ev.kv.value, ev.kv.mod_revision)
                        kind = "ADDED" if ev.kv.create_revision == ev.kv.mod_revision else "MODIFIED"
                    if self._selected(obj, query):
                        yield {"type": kind, "object": obj}
        except Compacted as exc:
            yield {
                "type": "ERROR",
                "object": ApiError(
                    410, "Expired", f"too old resource version: {start - 1} ({exc.compact_revision})"
                ).status(),
            }
        except TimeoutError:
            return

    # -- HTTP --------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("request", extra={"line": format % args})

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
                data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
                try:
                    server.route(self, method, url.path, query, body)
                except ApiError as exc:
                    self._send(exc.code, exc.status())
                except (BrokenPipeError, ConnectionResetError):
                    pass
                except Exception as exc:  # a bug is a 500 with its message, the server goes on
                    log.exception("request failed")
                    self._send(500, ApiError(500, "InternalError", f"internal error: {exc}").status())

            def stream(self, events: Iterator[dict[str, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for ev in events:
                        line = json.dumps(ev).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        return Handler

    def route(self, h: Any, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        from labs.apiserver import discovery

        parts = [p for p in path.split("/") if p]
        if method == "GET" and (doc := discovery.document(self, parts)) is not None:
            h._send(200, doc)
            return
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else ""), (rest[2] if len(rest) > 2 else "")
        r = self.registry.find(group, version, plural)
        if r is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if not r.namespaced:
            namespace = None
        if sub and (sub != "status" or not r.status):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        strict = query.get("fieldValidation") == "Strict"
        if method in ("POST", "PUT") and "protobuf" in h.headers.get("Content-Type", ""):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the lab API server takes JSON bodies only, not protobuf (typed clients such as "
                "`kubectl create namespace` send protobuf: use `kubectl apply -f` or a JSON client)",
            )
        if method == "GET" and not name:
            if query.get("watch") in ("true", "1"):
                h.stream(self.watch(r, namespace, query))
                return
            listed = self.list(r, namespace, query)
            h._send(200, table(r, listed, h.headers.get("Accept", "")))
            return
        if method == "GET":
            obj = self.get(r, namespace, name)
            h._send(200, table(r, obj, h.headers.get("Accept", "")))
            return
        if method == "POST" and not name:
            obj = self._json(body)
            h._send(201, self.create(r, namespace, obj, strict=strict))
            return
        if method == "PUT" and name:
            obj = self._json(body)
            if obj.get("metadata", {}).get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            h._send(200, self.update(r, namespace, name, obj, subresource=sub, strict=strict))
            return
        if method == "PATCH" and name:
            ctype = h.headers.get("Content-Type", "")
            if ctype.startswith("application/apply-patch"):
                raise ApiError(
                    415, "UnsupportedMediaType", "server-side apply is not supported by the lab API server"
                )
            h._send(200, self.patch(r, namespace, name, ctype, body, sub, strict))
            return
        if method == "DELETE" and name:
            h._send(200, self.delete(r, namespace, name))
            return
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(body)
        except ValueError:
            try:
                import yaml

                obj = yaml.safe_load(body)
            except Exception:
                raise ApiError(400, "BadRequest", "the body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        return obj
