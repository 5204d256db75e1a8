"""The CNI spec's result and error objects as JSON schemas (SPEC.md, "Result" and "Error"), for
checking what the plugins print: netkit-cni's and the reference ones'."""

from __future__ import annotations

from typing import Any

import jsonschema

_CIDR = {"type": "string", "pattern": r"^[0-9a-fA-F:.]+/\d{1,3}$"}
_IP = {"type": "string", "pattern": r"^[0-9a-fA-F:.]+$"}
RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["cniVersion"],
    "additionalProperties": False,
    "properties": {
        "cniVersion": {"type": "string"},
        "interfaces": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "mac": {"type": "string", "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"},
                    "sandbox": {"type": "string"},
                },
            },
        },
        "ips": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["address"],
                "additionalProperties": False,
                "properties": {
                    "address": _CIDR,
                    "gateway": _IP,
                    "interface": {"type": "integer", "minimum": 0},
                    "version": {"enum": ["4", "6"]},  # 0.4.0 only
                },
            },
        },
        "routes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["dst"],
                "additionalProperties": False,
                "properties": {"dst": _CIDR, "gw": _IP},
            },
        },
        "dns": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "nameservers": {"type": "array", "items": {"type": "string"}},
                "domain": {"type": "string"},
                "search": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["cniVersion", "code", "msg"],
    "additionalProperties": False,
    "properties": {
        "cniVersion": {"type": "string"},
        "code": {"type": "integer", "minimum": 1},
        "msg": {"type": "string", "minLength": 1},
        "details": {"type": "string"},
    },
}


def check_result(obj: Any) -> None:
    jsonschema.validate(obj, RESULT)
    n = len(obj.get("interfaces") or [])
    for ip in obj.get("ips") or []:
        assert "interface" not in ip or ip["interface"] < n, obj


def check_error(obj: Any) -> None:
    jsonschema.validate(obj, ERROR)
