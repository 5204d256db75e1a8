"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), for PATCH requests."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "apply", "merge"]


class PatchError(ValueError):
    pass


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for p in parts[:-1]:
        try:
            node = node[int(p)] if isinstance(node, list) else node[p]
        except (KeyError, IndexError, ValueError):
            raise PatchError(f"path /{'/'.join(parts)} does not exist") from None
    return node


def apply(doc: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test; the whole patch or nothing."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"not an operation: {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = _get(out, src)
            if kind == "move":
                out = _remove(out, src)
            out = _add(out, parts, copy.deepcopy(value))
        elif kind == "add":
            out = _add(out, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            out = _remove(out, parts)
        elif kind == "replace":
            _get(out, parts)
            out = _add(_remove(out, parts), parts, copy.deepcopy(op.get("value")))
        elif kind == "test":
            if _get(out, parts) != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return out


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for p in parts:
        try:
            node = node[int(p)] if isinstance(node, list) else node[p]
        except (KeyError, IndexError, ValueError, TypeError):
            raise PatchError(f"path /{'/'.join(parts)} does not exist") from None
    return node


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if not 0 <= index <= len(parent):
            raise PatchError(f"index {last} out of range")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"cannot add under /{'/'.join(parts[:-1])}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _parent(doc, parts)
    last = parts[-1]
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"path /{'/'.join(parts)} does not exist") from None
    return doc
