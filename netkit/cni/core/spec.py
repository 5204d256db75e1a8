"""The CNI contract of ``netkit-cni`` (pure): the runtime's environment and network
configuration in, the spec's result or error object out (CNI spec 1.0.0, and 0.4.0, whose
results have the same shape).

A runtime runs the plugin with ``CNI_COMMAND`` (ADD, DEL, CHECK, VERSION), ``CNI_CONTAINERID``,
``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS`` and ``CNI_PATH`` in the environment and one plugin's
configuration on stdin (a ``.conf``, or one entry of a ``.conflist`` with ``name`` and
``cniVersion`` set by the runtime, and ``prevResult`` for CHECK, DEL and chained ADDs)::

    {"cniVersion": "1.0.0", "name": "blue", "type": "netkit-cni",
     "network": "blue",                      # the L2Network (default: name)
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]},
     "bridgeTimeoutSeconds": 10,             # how long ADD waits for the agent's bridge
     "stateDir": "/var/lib/netkit/cni"}      # the attachments the node agent publishes

Errors are the spec's codes (1-7, 11) or netkit's own (100+), printed as the spec's error object
on stdout, exit status 1.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMMANDS",
    "SUPPORTED_VERSIONS",
    "CniError",
    "NetConf",
    "Request",
    "host_veth_name",
    "parse_request",
    "result",
    "version_result",
]

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")

# The spec's well-known error codes, and netkit's (100+)
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NETWORK_NOT_HERE = 100  # the network's bridge is not on this node
IPAM_FAILED = 101  # the IPAM plugin refused or is missing
INTERFACE_EXISTS = 102  # CNI_IFNAME is taken in the container
CHECK_FAILED = 103  # CHECK found the attachment different from prevResult


@dataclass(frozen=True)
class CniError(Exception):
    """A failure as the spec reports it: ``code``, ``msg``, ``details``."""

    code: int
    msg: str
    details: str = ""
    version: str = "1.0.0"

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": self.version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class NetConf:
    version: str
    name: str
    network: str
    ipam: Mapping[str, Any]
    bridge_timeout: float = 10.0
    state_dir: str = "/var/lib/netkit/cni"
    prev_result: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)  # what IPAM is given, as it came


@dataclass(frozen=True)
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]
    path: tuple[str, ...]
    conf: NetConf | None  # None for VERSION
    asked: str = "1.0.0"  # VERSION: the cniVersion of the request
    env: Mapping[str, str] = field(default_factory=dict)  # the CNI_* variables, for delegates

    @property
    def pod(self) -> str | None:
        """``namespace/name`` from the Kubernetes runtime's CNI_ARGS, when given."""
        ns, name = self.args.get("K8S_POD_NAMESPACE"), self.args.get("K8S_POD_NAME")
        return f"{ns}/{name}" if ns and name else None


_KNOWN = {"cniVersion", "name", "type", "network", "ipam", "bridgeTimeoutSeconds", "stateDir", "prevResult"}
# what runtimes and meta-plugins add to a plugin's configuration, and the spec's own keys
_IGNORED = {"args", "runtimeConfig", "capabilities", "dns", "ipMasq", "cniVersions", "disableCheck"}


def _conf(raw: Any) -> NetConf:
    if not isinstance(raw, Mapping):
        raise CniError(DECODE_FAILURE, "the network configuration must be a JSON object")
    version = raw.get("cniVersion")
    if not isinstance(version, str):
        raise CniError(INVALID_CONFIG, "cniVersion: required")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    problems = []
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        problems.append("name: required (the runtime sets it from the network list)")
    network = raw.get("network", name)
    if not isinstance(network, str) or not network:
        problems.append("network: must be the L2Network's name")
    ipam = raw.get("ipam")
    if not isinstance(ipam, Mapping) or not isinstance(ipam.get("type"), str) or not ipam.get("type"):
        problems.append("ipam: required, with type (e.g. host-local, static)")
    elif "/" in str(ipam["type"]):
        problems.append("ipam.type: a plugin name found on CNI_PATH, not a path")
    timeout = raw.get("bridgeTimeoutSeconds", 10)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 <= timeout <= 300:
        problems.append("bridgeTimeoutSeconds: a number of seconds from 0 to 300")
    state_dir = raw.get("stateDir", "/var/lib/netkit/cni")
    if not isinstance(state_dir, str) or not state_dir.startswith("/"):
        problems.append("stateDir: an absolute path")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, Mapping):
        problems.append("prevResult: must be a result object")
    if problems:
        raise CniError(INVALID_CONFIG, "invalid network configuration", "; ".join(problems), version)
    unknown = sorted(set(raw) - _KNOWN - _IGNORED)
    if unknown:
        raise CniError(
            UNSUPPORTED_FIELD, f"unknown field {unknown[0]}", f"netkit-cni knows {sorted(_KNOWN)}", version
        )
    assert isinstance(name, str) and isinstance(network, str) and isinstance(ipam, Mapping)
    return NetConf(version, name, network, ipam, float(timeout), str(state_dir), prev, raw)


def parse_request(env: Mapping[str, str], stdin: bytes) -> Request:
    """The runtime's request, or the CniError the spec says to report."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_COMMAND must be one of {', '.join(COMMANDS)}, not {command!r}"
        )
    if command == "VERSION":  # stdin: {"cniVersion": ...} only (what libcni sends), or nothing
        return Request(command, "", "", "", {}, (), None, _version_asked(stdin))
    try:
        raw = json.loads(stdin)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "the network configuration is not JSON", str(exc)) from None
    conf: NetConf = _conf(raw)
    version = conf.version
    missing = [k for k in ("CNI_CONTAINERID", "CNI_IFNAME") if not env.get(k)]
    if command in ("ADD", "CHECK") and not env.get("CNI_NETNS"):
        missing.append("CNI_NETNS")
    if not env.get("CNI_PATH"):
        missing.append("CNI_PATH")
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"missing {', '.join(missing)}", version=version)
    ifname = env["CNI_IFNAME"]
    if not _IFNAME.match(ifname) or ifname in (".", ".."):
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_IFNAME {ifname!r} is not an interface name", version=version
        )
    args: dict[str, str] = {}
    for part in filter(None, env.get("CNI_ARGS", "").split(";")):
        key, sep, value = part.partition("=")
        if not sep:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {part!r} is not KEY=VALUE", version=version)
        args[key] = value
    path = tuple(p for p in env["CNI_PATH"].split(":") if p)
    if command == "CHECK" and (conf is None or conf.prev_result is None):
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult", version=version)
    cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
    return Request(
        command, env["CNI_CONTAINERID"], env.get("CNI_NETNS", ""), ifname, args, path, conf, env=cni_env
    )


def _version_asked(stdin: bytes) -> str:
    """The cniVersion a VERSION request names (any the caller speaks; "1.0.0" if none)."""
    try:
        raw = json.loads(stdin) if stdin.strip() else {}
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "the VERSION request is not JSON", str(exc)) from None
    version = raw.get("cniVersion") if isinstance(raw, Mapping) else None
    return version if isinstance(version, str) and version else "1.0.0"


def host_veth_name(container_id: str, ifname: str) -> str:
    """The host end of the pod's veth: the same for ADD, DEL and CHECK of one attachment, so a
    DEL after a crash finds what a half-done ADD made (``nk`` + 13 hex digits: 15 bytes)."""
    return "nk" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:13]


def version_result(asked: str) -> dict[str, Any]:
    """The VERSION answer, in the version asked for when it is one we speak (libcni asks with the
    configuration's), else in ours."""
    version = asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def result(
    version: str,
    bridge: tuple[str, str],
    host: tuple[str, str],
    container: tuple[str, str, str],
    ipam: Mapping[str, Any],
) -> dict[str, Any]:
    """The ADD result: the interfaces as the reference ``bridge`` plugin lists them (bridge, host
    veth, container interface with its sandbox), the IPAM plugin's addresses put on the
    container interface (index 2), its routes and DNS."""
    ips = []
    for ip in ipam.get("ips") or ():
        entry = {k: v for k, v in ip.items() if k != "interface"}
        entry["interface"] = 2
        if version == "0.4.0":
            entry.setdefault("version", str(ipaddress.ip_interface(str(ip["address"])).version))
        ips.append(entry)
    out: dict[str, Any] = {
        "cniVersion": version,
        "interfaces": [
            {"name": bridge[0], "mac": bridge[1]},
            {"name": host[0], "mac": host[1]},
            {"name": container[0], "mac": container[1], "sandbox": container[2]},
        ],
        "ips": ips,
    }
    if ipam.get("routes"):
        out["routes"] = list(ipam["routes"])
    out["dns"] = dict(ipam.get("dns") or {})
    return out
