"""Server-side Tables (``meta.k8s.io/v1``) for ``kubectl get``: a CRD's printer columns
(JSONPath), NAME and AGE for the built-in kinds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from labs.apiserver.registry import Resource

__all__ = ["human_duration", "jsonpath", "table"]


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: ``.a.b``, ``[0]``, ``[?(@.k=="v")]``."""
    nodes = [obj]
    for token in re.findall(r'\.[A-Za-z0-9_-]+|\[\?\(@\.[A-Za-z0-9_-]+=="[^"]*"\)\]|\[\d+\]|\[\*\]', path):
        out = []
        for node in nodes:
            if token.startswith(".") and isinstance(node, Mapping) and token[1:] in node:
                out.append(node[token[1:]])
            elif token.startswith("[?") and isinstance(node, list):
                key, value = re.match(r'\[\?\(@\.([^=]+)=="([^"]*)"\)\]', token).groups()  # type: ignore[union-attr]
                out += [x for x in node if isinstance(x, Mapping) and str(x.get(key)) == value]
            elif token == "[*]" and isinstance(node, list):
                out += node
            elif token.startswith("[") and isinstance(node, list) and int(token[1:-1]) < len(node):
                out.append(node[int(token[1:-1])])
        nodes = out
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else nodes


def human_duration(seconds: float) -> str:
    """As kube-apiserver prints an age: 45s, 3m12s, 17m, 4h5m, 30h, 3d4h, 40d, 3y."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 730:
        return f"{d}d"
    return f"{d // 365}y"


def _age(timestamp: Any) -> str | None:
    if not isinstance(timestamp, str):
        return None
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _cell(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_ == "integer" and isinstance(value, int | str) and str(value).lstrip("-").isdigit():
        return int(value)
    if isinstance(value, list | dict):
        import json

        return json.dumps(value, separators=(",", ":"))
    return value


def _row(r: Resource, obj: Mapping[str, Any], columns: list[Mapping[str, Any]]) -> dict[str, Any]:
    cells: list[Any] = [obj["metadata"]["name"]]
    for c in columns:
        if c["type"] == "date":
            cells.append(_age(jsonpath(obj, c["jsonPath"])))
        else:
            cells.append(_cell(jsonpath(obj, c["jsonPath"]), c["type"]))
    partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
    return {"cells": cells, "object": partial}


def table(r: Resource, payload: Mapping[str, Any], accept: str) -> Any:
    """``payload`` (an object or a list) as a Table when the client asked for one."""
    if "as=Table" not in accept:
        return payload
    columns = list(r.columns) or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    if not any(c["name"] == "Age" for c in columns):
        columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "the object's name",
            "priority": 0,
        }
    ]
    for c in columns:
        definitions.append(
            {
                "name": c["name"],
                "type": "date" if c["type"] == "date" else c["type"],
                "format": c.get("format", ""),
                "description": c.get("description", c["name"]),
                "priority": int(c.get("priority", 0)),
            }
        )
    items = payload.get("items", [payload])
    meta = {"resourceVersion": payload["metadata"].get("resourceVersion", "")}
    if payload.get("metadata", {}).get("continue"):
        meta["continue"] = payload["metadata"]["continue"]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": definitions,
        "rows": [_row(r, o, columns) for o in items],
    }
