"""The reflector's configuration file (pure): YAML in, a validated ``ReflectorConfig`` out.

Every error names the key it is about (``neighbors[2].max_prefix.limit: ...``); unknown keys are
errors too, so that a typo is not silently ignored. See docs/bgp-reflector.md for the reference
and ``EXAMPLE`` for a complete file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bgp.model import Role, Timers
from bgp.reflector.bestpath import DEFAULT_LOCAL_PREF, Selection
from bgp.reflector.policy import (
    MaxPrefix,
    MaxPrefixAction,
    PeerPolicy,
    PolicyError,
    PrefixFilter,
    parse_block,
)
from bgp.reflector.rib import PeerSpec, Reflector
from bgp.reflector.route import ipv4_int
from netkit.addr import AddressError, HostPort, parse_hostport
from netkit.fields import ConfigError

__all__ = [
    "EXAMPLE",
    "ExabgpSettings",
    "NeighborConfig",
    "ReflectorConfig",
    "load_config",
    "parse_config",
]

EXAMPLE = """\
# reflector.yaml: a reflector at 198.18.0.2 for two clients and one non-client peer
router_id: 198.18.0.2
asn: 64512
local_address: 198.18.0.2        # session source address; ExaBGP listens here (port 179)
cluster_id: 198.18.0.2           # default: router_id
metrics: 198.18.0.2:9179         # /metrics, /health, /ready, /status (optional)
timers: {hold: 9, keepalive: 3, connect_retry: 1}
defaults:                        # for every neighbour, unless it says otherwise
  allowed_prefixes: [198.19.0.0/16 le 26, 2001:db8::/32 le 64]
  max_prefix: {limit: 10000, action: keep}      # or teardown
neighbors:
  - {name: node-a, address: 198.18.0.1, asn: 64512, role: client, password: s3cret}
  - {name: node-b, address: 198.18.0.3, asn: 64512, role: client,
     allowed_prefixes: [198.19.3.0/24], max_prefix: {limit: 100, action: teardown}}
  - {name: rr-2, address: 198.18.0.4, asn: 64512, role: peer}   # another reflector
"""




@dataclass(frozen=True)
class ExabgpSettings:
    """How ExaBGP is run. ``api``: ``wire`` (UPDATEs pass ExaBGP as bytes, see ``exabgp_main``)
    or ``text`` (ExaBGP's own JSON and text API); ``reactor_speed``: ExaBGP's
    ``exabgp.reactor.speed`` (its main loop sleeps speed/100 s when idle); None picks what was
    measured best for the API mode (``speed``); ``tuned``: in text mode, the two scheduling fixes
    of ``exabgp_main``; ``chunk``: prefixes per command; ``log_level``: ExaBGP's own log level."""

    api: str = "wire"
    reactor_speed: float | None = None
    tuned: bool = True
    chunk: int = 1000
    log_level: str = "WARNING"

    @property
    def speed(self) -> float:
        """The reactor speed used. Measured on the benchmark lab: in wire mode 1.0 (ExaBGP's
        default) is as fast as 0.1 or 0.01 and idles at ~1 % CPU (0.1: ~3 %, 0.01: a whole core);
        the text API needs 0.1 (10,000 routes: 3.5 s at 1.0, 1.4 s at 0.1 untuned)."""
        if self.reactor_speed is not None:
            return self.reactor_speed
        return 1.0 if self.api == "wire" else 0.1


@dataclass(frozen=True)
class NeighborConfig:
    name: str
    address: str
    asn: int
    role: Role = Role.CLIENT
    password: str | None = None
    passive: bool = False
    local_address: str | None = None
    allowed_prefixes: tuple[str, ...] | None = None
    allow_default: bool = False
    max_prefix: MaxPrefix | None = None

    @property
    def policy(self) -> PeerPolicy:
        return PeerPolicy(PrefixFilter(self.allowed_prefixes, self.allow_default), self.max_prefix)


@dataclass(frozen=True)
class ReflectorConfig:
    router_id: str
    asn: int
    local_address: str
    neighbors: tuple[NeighborConfig, ...]
    cluster_id: str | None = None
    local_address_v6: str | None = None
    listen: bool = True
    port: int = 179
    families: tuple[str, ...] = ("ipv4", "ipv6")
    metrics: HostPort | None = None
    timers: Timers = field(default_factory=Timers)
    igp_metrics: Mapping[str, int] = field(default_factory=dict)
    default_local_pref: int = DEFAULT_LOCAL_PREF
    exabgp: ExabgpSettings = field(default_factory=ExabgpSettings)
    log_level: str = "info"

    @property
    def effective_cluster_id(self) -> str:
        return self.cluster_id or self.router_id

    def reflector(self) -> Reflector:
        """A fresh ``Reflector`` for this configuration."""
        return Reflector(
            router_id=self.router_id,
            asn=self.asn,
            cluster_id=self.effective_cluster_id,
            local_address=self.local_address,
            local_address_v6=self.local_address_v6,
            peers=[PeerSpec(n.name, n.address, n.asn, n.role, n.policy) for n in self.neighbors],
            selection=Selection(self.igp_metrics, self.default_local_pref),
            families=self.families,
            chunk=self.exabgp.chunk,
        )


# -- validation helpers ------------------------------------------------------------------------

_TOP = {
    "router_id",
    "asn",
    "local_address",
    "local_address_v6",
    "cluster_id",
    "listen",
    "port",
    "families",
    "metrics",
    "timers",
    "igp_metrics",
    "default_local_pref",
    "exabgp",
    "log_level",
    "defaults",
    "neighbors",
}
_NEIGHBOR = {
    "name",
    "address",
    "asn",
    "role",
    "password",
    "passive",
    "local_address",
    "allowed_prefixes",
    "allow_default",
    "max_prefix",
    "description",
}
_DEFAULTS = {"allowed_prefixes", "allow_default", "max_prefix", "password", "passive"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_EXABGP_LOG_LEVELS = ("DEBUG", "INFO", "NOTICE", "WARNING", "ERR", "CRITICAL")


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{key}: keys must be strings, got {k!r}")
    return value


def _unknown(data: Mapping[str, Any], allowed: set[str], key: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        where = f"{key}." if key else ""
        raise ConfigError(f"{where}{extra[0]}: unknown key (expected one of: {', '.join(sorted(allowed))})")


def _int(value: object, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{key}: must be between {lo} and {hi}, got {value}")
    return value


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _ipv4(value: object, key: str) -> str:
    text = _str(value, key)
    try:
        ipv4_int(text)
    except ValueError:
        raise ConfigError(f"{key}: expected an IPv4 address (dotted quad), got {text!r}") from None
    return text


def _ip(value: object, key: str, version: int | None = None) -> str:
    text = _str(value, key)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{key}: expected an IP address, got {text!r}") from None
    if version is not None and ip.version != version:
        raise ConfigError(f"{key}: expected an IPv{version} address, got {text!r}")
    return str(ip)


def _password(value: object, key: str) -> str:
    text = _str(value, key)
    if len(text) > 80 or any(c in text for c in "\"'\\;{}\n\r\t ") or not text.isprintable():
        raise ConfigError(f"{key}: up to 80 printable characters without quotes, spaces, ';', '{{' or '}}'")
    return text


def _blocks(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of prefixes")
    out = []
    for i, item in enumerate(value):
        text = _str(item, f"{key}[{i}]")
        try:
            parse_block(text)
        except PolicyError as exc:
            raise ConfigError(f"{key}[{i}]: {exc}") from None
        out.append(text)
    return tuple(out)


def _max_prefix(value: object, key: str) -> MaxPrefix | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return MaxPrefix(_int(value, key, 1, 1 << 31))
    data = _mapping(value, key)
    _unknown(data, {"limit", "action"}, key)
    if "limit" not in data:
        raise ConfigError(f"{key}.limit: required")
    limit = _int(data["limit"], f"{key}.limit", 1, 1 << 31)
    action_text = data.get("action", "keep")
    try:
        action = MaxPrefixAction(action_text)
    except ValueError:
        raise ConfigError(f"{key}.action: expected keep or teardown, got {action_text!r}") from None
    return MaxPrefix(limit, action)


def _neighbor(value: object, key: str, defaults: Mapping[str, Any], asn: int) -> NeighborConfig:
    data = _mapping(value, key)
    _unknown(data, _NEIGHBOR, key)
    merged = {**defaults, **data}
    for required in ("address", "asn"):
        if required not in data:
            raise ConfigError(f"{key}.{required}: required")
    address = _ip(data["address"], f"{key}.address")
    name = _str(data.get("name", address), f"{key}.name")
    peer_asn = _int(data["asn"], f"{key}.asn", 1, (1 << 32) - 1)
    role_text = data.get("role", "client")
    try:
        role = Role(role_text)
    except ValueError:
        raise ConfigError(f"{key}.role: expected client, peer or reflector, got {role_text!r}") from None
    if peer_asn != asn and "role" in data and role is Role.CLIENT:
        raise ConfigError(f"{key}.role: an eBGP neighbour (asn {peer_asn} != {asn}) cannot be a client")
    return NeighborConfig(
        name=name,
        address=address,
        asn=peer_asn,
        role=role,
        password=_password(merged["password"], f"{key}.password")
        if merged.get("password") is not None
        else None,
        passive=_bool(merged.get("passive", False), f"{key}.passive"),
        local_address=_ip(data["local_address"], f"{key}.local_address") if "local_address" in data else None,
        allowed_prefixes=(
            _blocks(merged["allowed_prefixes"], f"{key}.allowed_prefixes")
            if merged.get("allowed_prefixes") is not None
            else None
        ),
        allow_default=_bool(merged.get("allow_default", False), f"{key}.allow_default"),
        max_prefix=_max_prefix(merged.get("max_prefix"), f"{key}.max_prefix"),
    )


def parse_config(data: object) -> ReflectorConfig:
    """A parsed YAML document -> ``ReflectorConfig``; ConfigError naming the key on any problem."""
    top = _mapping(data, "config")
    _unknown(top, _TOP, "")
    for required in ("router_id", "asn", "neighbors"):
        if required not in top:
            raise ConfigError(f"{required}: required")
    router_id = _ipv4(top["router_id"], "router_id")
    asn = _int(top["asn"], "asn", 1, (1 << 32) - 1)
    local_address = _ip(top.get("local_address", router_id), "local_address")
    defaults = _mapping(top.get("defaults", {}), "defaults")
    _unknown(defaults, _DEFAULTS, "defaults")
    raw_neighbors = top["neighbors"]
    if not isinstance(raw_neighbors, list) or not raw_neighbors:
        raise ConfigError("neighbors: expected a non-empty list")
    neighbors = tuple(_neighbor(n, f"neighbors[{i}]", defaults, asn) for i, n in enumerate(raw_neighbors))
    seen: dict[str, int] = {}
    for i, n in enumerate(neighbors):
        if n.address in seen:
            raise ConfigError(f"neighbors[{i}].address: {n.address} is also neighbors[{seen[n.address]}]")
        if n.address == local_address:
            raise ConfigError(f"neighbors[{i}].address: {n.address} is the reflector's own local_address")
        seen[n.address] = i
    families_raw = top.get("families", ["ipv4", "ipv6"])
    if not isinstance(families_raw, list) or not families_raw:
        raise ConfigError("families: expected a non-empty list of ipv4, ipv6")
    families = []
    for i, fam in enumerate(families_raw):
        if fam not in ("ipv4", "ipv6"):
            raise ConfigError(f"families[{i}]: expected ipv4 or ipv6, got {fam!r}")
        families.append(fam)
    metrics = None
    if top.get("metrics") is not None:
        try:
            metrics = parse_hostport(_str(top["metrics"], "metrics"))
        except AddressError as exc:
            raise ConfigError(f"metrics: {exc}") from None
    timers = Timers()
    if "timers" in top:
        t = _mapping(top["timers"], "timers")
        _unknown(t, {"hold", "keepalive", "connect_retry"}, "timers")
        hold = _int(t.get("hold", timers.hold), "timers.hold", 0, 65535)
        if 0 < hold < 3:
            raise ConfigError("timers.hold: must be 0 or at least 3 (RFC 4271)")
        timers = Timers(
            hold=hold,
            keepalive=_int(t.get("keepalive", max(hold // 3, 0)), "timers.keepalive", 0, 65535),
            connect_retry=_int(t.get("connect_retry", timers.connect_retry), "timers.connect_retry", 1, 3600),
        )
    igp: dict[str, int] = {}
    for nh, cost in _mapping(top.get("igp_metrics", {}), "igp_metrics").items():
        igp[_ip(nh, f"igp_metrics.{nh}")] = _int(cost, f"igp_metrics.{nh}", 0, (1 << 32) - 1)
    exabgp = ExabgpSettings()
    if "exabgp" in top:
        e = _mapping(top["exabgp"], "exabgp")
        _unknown(e, {"api", "reactor_speed", "tuned", "chunk", "log_level"}, "exabgp")
        api = e.get("api", exabgp.api)
        if api not in ("wire", "text"):
            raise ConfigError(f"exabgp.api: expected wire or text, got {api!r}")
        speed = e.get("reactor_speed")
        if speed is not None and (
            isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.001 <= speed <= 10
        ):
            raise ConfigError(f"exabgp.reactor_speed: expected a number between 0.001 and 10, got {speed!r}")
        level = e.get("log_level", exabgp.log_level)
        if level not in _EXABGP_LOG_LEVELS:
            raise ConfigError(
                f"exabgp.log_level: expected one of {', '.join(_EXABGP_LOG_LEVELS)}, got {level!r}"
            )
        exabgp = ExabgpSettings(
            api=api,
            reactor_speed=float(speed) if speed is not None else None,
            tuned=_bool(e.get("tuned", exabgp.tuned), "exabgp.tuned"),
            chunk=_int(e.get("chunk", exabgp.chunk), "exabgp.chunk", 1, 100000),
            log_level=level,
        )
    log_level = top.get("log_level", "info")
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: expected one of {', '.join(_LOG_LEVELS)}, got {log_level!r}")
    return ReflectorConfig(
        router_id=router_id,
        asn=asn,
        local_address=local_address,
        local_address_v6=(
            _ip(top["local_address_v6"], "local_address_v6", 6)
            if top.get("local_address_v6") is not None
            else None
        ),
        cluster_id=_ipv4(top["cluster_id"], "cluster_id") if top.get("cluster_id") is not None else None,
        listen=_bool(top.get("listen", True), "listen"),
        port=_int(top.get("port", 179), "port", 1, 65535),
        families=tuple(families),
        metrics=metrics,
        timers=timers,
        igp_metrics=igp,
        default_local_pref=_int(
            top.get("default_local_pref", DEFAULT_LOCAL_PREF), "default_local_pref", 0, (1 << 32) - 1
        ),
        exabgp=exabgp,
        log_level=log_level,
        neighbors=neighbors,
    )


def load_config(text: str, source: str = "config") -> ReflectorConfig:
    """YAML text -> ``ReflectorConfig``; ConfigError (naming ``source`` and the key) otherwise."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
