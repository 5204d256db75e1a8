"""A custom resource against its CRD's structural schema, as kube-apiserver treats it: defaults
applied, unknown fields pruned, then every problem with its field path (the causes of a 422).

Covered: ``type`` (and ``x-kubernetes-int-or-string``), ``enum``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``pattern``, ``format: date-time``, ``minItems``/``maxItems``,
``maxProperties``, ``required``, ``additionalProperties``, list-type ``map`` keys unique, and
``x-kubernetes-validations`` (CEL, through cel-python) including transition rules against the old
object. Messages use kube-apiserver's words (``Invalid value``, ``Unsupported value``, ``Required
value``, ``Duplicate value``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

__all__ = ["Problem", "apply_defaults", "prune", "validate"]

Schema = Mapping[str, Any]
Problem = tuple[str, str]  # (field path, message)
_MISSING = object()
_env = celpy.Environment()
_programs: dict[str, Any] = {}


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _type_ok(value: Any, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    t = schema.get("type")
    if t is None:
        return True
    if isinstance(value, bool) and t != "boolean":
        return False
    return isinstance(value, _TYPES[t])


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict | list):
        return f'"{type(value).__name__ if isinstance(value, list) else "object"}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """``obj`` with every missing field that has a ``default`` filled in (recursively)."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        out = dict(obj)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            out = {
                k: apply_defaults(v, extra) if k not in schema.get("properties", {}) else v
                for k, v in out.items()
            }
        return out
    if isinstance(obj, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in obj]
    return obj


def prune(obj: Any, schema: Schema) -> tuple[Any, list[str]]:
    """``obj`` without fields the schema does not know, and their paths (as a server warns)."""
    dropped: list[str] = []

    def walk(value: Any, s: Schema, path: str) -> Any:
        if isinstance(value, dict) and s.get("type") == "object":
            if s.get("x-kubernetes-preserve-unknown-fields") or (
                "properties" not in s and "additionalProperties" not in s
            ):
                return value
            props = s.get("properties", {})
            extra = s.get("additionalProperties")
            out = {}
            for k, v in value.items():
                if k in props:
                    out[k] = walk(v, props[k], f"{path}.{k}" if path else k)
                elif isinstance(extra, Mapping):
                    out[k] = walk(v, extra, f"{path}[{k}]")
                else:
                    dropped.append(f"{path}.{k}" if path else k)
            return out
        if isinstance(value, list) and "items" in s:
            return [walk(v, s["items"], f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(obj, schema, ""), dropped


def validate(obj: Any, schema: Schema, old: Any = _MISSING, path: str = "") -> list[Problem]:
    """Every problem of ``obj`` (already defaulted and pruned) under ``schema``; ``old`` is the
    stored object on an update, for transition rules (``oldSelf``)."""
    problems: list[Problem] = []
    _walk(obj, schema, old, path, problems)
    return problems


def _walk(value: Any, s: Schema, old: Any, path: str, out: list[Problem]) -> None:
    where = path or "<root>"
    if value is None and s.get("nullable"):
        return
    if not _type_ok(value, s):
        expected = "integer or string" if s.get("x-kubernetes-int-or-string") else s.get("type")
        out.append(
            (where, f'Invalid value: "{type(value).__name__}": {where} in body must be of type {expected}')
        )
        return
    before = len(out)
    if "enum" in s and value not in s["enum"]:
        allowed = ", ".join(_show(v) for v in s["enum"])
        out.append((where, f"Unsupported value: {_show(value)}: supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in s and value < s["minimum"]:
            out.append(
                (
                    where,
                    f"Invalid value: {value}: {where} in body should be greater than or equal to "
                    f"{s['minimum']}",
                )
            )
        if "maximum" in s and value > s["maximum"]:
            out.append(
                (
                    where,
                    f"Invalid value: {value}: {where} in body should be less than or equal to {s['maximum']}",
                )
            )
    if isinstance(value, str):
        if "maxLength" in s and len(value) > s["maxLength"]:
            out.append((where, f"Too long: may not be more than {s['maxLength']} bytes"))
        if "minLength" in s and len(value) < s["minLength"]:
            out.append(
                (
                    where,
                    f"Invalid value: {_show(value)}: {where} in body should be at least "
                    f"{s['minLength']} chars long",
                )
            )
        if "pattern" in s and not re.search(s["pattern"], value):
            out.append(
                (where, f"Invalid value: {_show(value)}: {where} in body should match '{s['pattern']}'")
            )
        if s.get("format") == "date-time":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                out.append(
                    (where, f"Invalid value: {_show(value)}: {where} in body must be of type date-time")
                )
    if isinstance(value, list):
        if "maxItems" in s and len(value) > s["maxItems"]:
            out.append((where, f"Too many: {len(value)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(value) < s["minItems"]:
            out.append(
                (
                    where,
                    f"Invalid value: {len(value)}: {where} in body should have at least "
                    f"{s['minItems']} items",
                )
            )
        keys = s.get("x-kubernetes-list-map-keys")
        seen: set[tuple[Any, ...]] = set()
        olds = old if isinstance(old, list) else []
        for i, item in enumerate(value):
            item_old: Any = _MISSING
            if keys and isinstance(item, dict):
                key = tuple(item.get(k) for k in keys)
                if key in seen:
                    out.append(
                        (f"{path}[{i}]", f"Duplicate value: {_show(dict(zip(keys, key, strict=True)))}")
                    )
                seen.add(key)
                item_old = next(
                    (o for o in olds if isinstance(o, dict) and tuple(o.get(k) for k in keys) == key),
                    _MISSING,
                )
            _walk(item, s.get("items", {}), item_old, f"{path}[{i}]", out)
    if isinstance(value, dict):
        props = s.get("properties", {})
        for key in s.get("required", []):
            if key not in value:
                out.append((f"{path}.{key}" if path else key, "Required value"))
        if "maxProperties" in s and len(value) > s["maxProperties"]:
            out.append((where, f"Too many: {len(value)}: must have at most {s['maxProperties']} items"))
        extra = s.get("additionalProperties")
        for key, sub_value in value.items():
            sub_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            if key in props:
                _walk(sub_value, props[key], sub_old, f"{path}.{key}" if path else key, out)
            elif isinstance(extra, Mapping):
                _walk(sub_value, extra, sub_old, f"{path}[{key}]", out)
    if len(out) == before:  # CEL runs on values that passed the schema, as the server's does
        for rule in s.get("x-kubernetes-validations", []):
            out.extend(_cel(rule, value, old, where))


def _cel(rule: Mapping[str, Any], value: Any, old: Any, where: str) -> list[Problem]:
    text = rule["rule"]
    transition = "oldSelf" in text
    if transition and old is _MISSING:
        return []  # a transition rule is not run on create
    program = _programs.get(text)
    if program is None:
        program = _programs[text] = _env.program(_env.compile(text))
    activation = {"self": json_to_cel(value)}
    if transition:
        activation["oldSelf"] = json_to_cel(old)
    try:
        ok = program.evaluate(activation)
    except CELEvalError as exc:
        return [(where, f"Invalid value: {_show(value)}: rule {text!r} could not be evaluated: {exc}")]
    if isinstance(ok, CELEvalError):
        return [(where, f"Invalid value: {_show(value)}: rule {text!r} could not be evaluated: {ok}")]
    if bool(ok):
        return []
    return [(where, f"Invalid value: {_show(value)}: {rule.get('message') or 'failed rule: ' + text}")]
