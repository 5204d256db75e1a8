"""The reflector's configuration file (pure): YAML in, a validated ``ReflectorConfig`` out.

Every error names the key it is about (``neighbors[2].max_prefix.limit: ...``); unknown keys are
errors too, so that a typo is not silently ignored. See docs/bgp-reflector.md for the reference
and ``EXAMPLE`` for a complete file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from bgp.core.model import Role, Timers
from bgp.reflector.core.bestpath import DEFAULT_LOCAL_PREF, Selection
from bgp.reflector.core.policy import (
    MaxPrefix,
    MaxPrefixAction,
    PeerPolicy,
    PolicyError,
    PrefixFilter,
    parse_block,
)
from bgp.reflector.core.rib import PeerSpec, Reflector
from netkit.base.addr import AddressError, HostPort, parse_hostport
from netkit.base.fields import (
    ConfigError,
    Errors,
    boolean,
    integer,
    ip,
    nonempty_str,
    number,
    one_of,
    optional,
    unknown_keys,
)

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
_T = TypeVar("_T")
_EMPTY: Mapping[str, Any] = {}
_DEFAULTS = {"allowed_prefixes", "allow_default", "max_prefix", "password", "passive"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_EXABGP_LOG_LEVELS = ("DEBUG", "INFO", "NOTICE", "WARNING", "ERR", "CRITICAL")


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{key}: keys must be strings, got {bad[0]!r}")
    return value


def _unknown(data: Mapping[str, Any], allowed: set[str], key: str) -> None:
    err = Errors()
    unknown_keys(sorted(data), sorted(allowed), key, err)
    err.raise_if_any()


def _field(parse: Callable[[Any], _T], value: object, key: str) -> _T:
    """A ``netkit.base.fields`` parser as one of the validators here (its problem under ``key``)."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _int(value: object, key: str, lo: int, hi: int) -> int:
    return _field(integer(lo, hi), value, key)


def _bool(value: object, key: str) -> bool:
    return _field(boolean(), value, key)


def _str(value: object, key: str) -> str:
    return _field(nonempty_str, value, key)


def _ipv4(value: object, key: str) -> str:
    return _field(ip(4), value, key)


def _ip(value: object, key: str, version: int | None = None) -> str:
    return _field(ip(version), value, key)


def _password(value: object, key: str) -> str:
    text = _str(value, key)
    if len(text) > 80 or any(c in text for c in "\"'\\;{}\n\r\t ") or not text.isprintable():
        raise ConfigError(f"{key}: up to 80 printable characters without quotes, spaces, ';', '{{' or '}}'")
    return text


def _blocks(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of prefixes")
    out = []
    errors = []
    for i, item in enumerate(value):
        try:
            text = _str(item, f"{key}[{i}]")
            parse_block(text)
        except ConfigError as exc:
            errors += exc.errors
            continue
        except PolicyError as exc:
            errors.append(f"{key}[{i}]: {exc}")
            continue
        out.append(text)
    if errors:
        raise ConfigError(errors)
    return tuple(out)


def _max_prefix(value: object, key: str) -> MaxPrefix | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return MaxPrefix(_int(value, key, 1, 1 << 31))
    data = _mapping(value, key)
    c = Errors()
    c.collect(_unknown, data, {"limit", "action"}, key, default=None)
    limit = 1
    if "limit" not in data:
        c.add(f"{key}.limit", "required")
    else:
        limit = c.collect(_int, data["limit"], f"{key}.limit", 1, 1 << 31, default=1)
    action = MaxPrefixAction(
        c.check(f"{key}.action", one_of(*MaxPrefixAction), data.get("action", "keep"), "keep")
    )
    c.raise_if_any()
    return MaxPrefix(limit, action)


def _neighbor(
    value: object, key: str, defaults: Mapping[str, Any], asn: int, c: Errors
) -> NeighborConfig | None:
    data = c.collect(_mapping, value, key, default=None)
    if data is None:
        return None
    before = len(c.items)
    c.collect(_unknown, data, _NEIGHBOR, key, default=None)
    merged = {**defaults, **data}
    for required in ("address", "asn"):
        if required not in data:
            c.add(f"{key}.{required}", "required")
    address = c.collect(_ip, data["address"], f"{key}.address", default="") if "address" in data else ""
    name = c.collect(_str, data.get("name", address or "?"), f"{key}.name", default="")
    peer_asn = (
        c.collect(_int, data["asn"], f"{key}.asn", 1, (1 << 32) - 1, default=asn) if "asn" in data else asn
    )
    role = Role(
        c.check(f"{key}.role", one_of("client", "peer", "reflector"), data.get("role", "client"), "client")
    )
    if peer_asn != asn and "role" in data and role is Role.CLIENT:
        c.add(f"{key}.role", f"an eBGP neighbour (asn {peer_asn} != {asn}) cannot be a client")
    password = None
    if merged.get("password") is not None:
        password = c.collect(_password, merged["password"], f"{key}.password", default=None)
    local = None
    if "local_address" in data:
        local = c.collect(_ip, data["local_address"], f"{key}.local_address", default=None)
    allowed = None
    if merged.get("allowed_prefixes") is not None:
        allowed = c.collect(_blocks, merged["allowed_prefixes"], f"{key}.allowed_prefixes", default=None)
    neighbor = NeighborConfig(
        name=name,
        address=address,
        asn=peer_asn,
        role=role,
        password=password,
        passive=c.collect(_bool, merged.get("passive", False), f"{key}.passive", default=False),
        local_address=local,
        allowed_prefixes=allowed,
        allow_default=c.collect(
            _bool, merged.get("allow_default", False), f"{key}.allow_default", default=False
        ),
        max_prefix=c.collect(_max_prefix, merged.get("max_prefix"), f"{key}.max_prefix", default=None),
    )
    return neighbor if len(c.items) == before else None


def parse_config(data: object) -> ReflectorConfig:
    """A parsed YAML document -> ``ReflectorConfig``; ``ConfigError`` listing every problem, each
    naming its key."""
    top = _mapping(data, "config")
    c = Errors()
    c.collect(_unknown, top, _TOP, "", default=None)
    for required in ("router_id", "asn", "neighbors"):
        if required not in top:
            c.add(f"{required}", "required")
    router_id = (
        c.collect(_ipv4, top["router_id"], "router_id", default="0.0.0.1")
        if "router_id" in top
        else "0.0.0.1"
    )
    asn = c.collect(_int, top["asn"], "asn", 1, (1 << 32) - 1, default=1) if "asn" in top else 1
    local_address = c.collect(_ip, top.get("local_address", router_id), "local_address", default=router_id)
    defaults = c.collect(_mapping, top.get("defaults", {}), "defaults", default=_EMPTY)
    c.collect(_unknown, defaults, _DEFAULTS, "defaults", default=None)
    raw_neighbors = top.get("neighbors", [])
    if "neighbors" in top and (not isinstance(raw_neighbors, list) or not raw_neighbors):
        c.add("neighbors", "expected a non-empty list")
        raw_neighbors = []
    parsed = [(i, _neighbor(n, f"neighbors[{i}]", defaults, asn, c)) for i, n in enumerate(raw_neighbors)]
    neighbors = tuple(n for _, n in parsed if n is not None)
    seen: dict[str, int] = {}
    for i, n in parsed:
        if n is None:
            continue
        if n.address in seen:
            c.add(f"neighbors[{i}].address", f"{n.address} is also neighbors[{seen[n.address]}]")
        elif n.address == local_address:
            c.add(f"neighbors[{i}].address", f"{n.address} is the reflector's own local_address")
        seen.setdefault(n.address, i)
    families_raw = top.get("families", ["ipv4", "ipv6"])
    families = []
    if not isinstance(families_raw, list) or not families_raw:
        c.add("families", "expected a non-empty list of ipv4, ipv6")
        families_raw = []
    for i, fam in enumerate(families_raw):
        if c.check(f"families[{i}]", one_of("ipv4", "ipv6"), fam, None):
            families.append(fam)
    metrics = None
    if top.get("metrics") is not None:
        text = c.collect(_str, top["metrics"], "metrics", default="")
        try:
            metrics = parse_hostport(text) if text else None
        except AddressError as exc:
            c.add("metrics", f"{exc}")
    timers = Timers()
    if "timers" in top:
        t = c.collect(_mapping, top["timers"], "timers", default=_EMPTY)
        c.collect(_unknown, t, {"hold", "keepalive", "connect_retry"}, "timers", default=None)
        hold = c.collect(_int, t.get("hold", timers.hold), "timers.hold", 0, 65535, default=timers.hold)
        if 0 < hold < 3:
            c.add("timers.hold", "must be 0 or at least 3 (RFC 4271)")
        timers = Timers(
            hold=hold,
            keepalive=c.collect(
                _int, t.get("keepalive", max(hold // 3, 0)), "timers.keepalive", 0, 65535,
                default=timers.keepalive,
            ),
            connect_retry=c.collect(
                _int, t.get("connect_retry", timers.connect_retry), "timers.connect_retry", 1, 3600,
                default=timers.connect_retry,
            ),
        )  # fmt: skip
    igp: dict[str, int] = {}
    for nh, cost in c.collect(_mapping, top.get("igp_metrics", {}), "igp_metrics", default=_EMPTY).items():
        address = c.collect(_ip, nh, f"igp_metrics.{nh}", default=None)
        value = c.collect(_int, cost, f"igp_metrics.{nh}", 0, (1 << 32) - 1, default=None)
        if address is not None and value is not None:
            igp[address] = value
    exabgp = ExabgpSettings()
    if "exabgp" in top:
        e = c.collect(_mapping, top["exabgp"], "exabgp", default=_EMPTY)
        c.collect(
            _unknown, e, {"api", "reactor_speed", "tuned", "chunk", "log_level"}, "exabgp", default=None
        )
        api = c.check("exabgp.api", one_of("wire", "text"), e.get("api", exabgp.api), exabgp.api)
        speed = c.check("exabgp.reactor_speed", optional(number(0.001, 10)), e.get("reactor_speed"), None)
        level = c.check(
            "exabgp.log_level",
            one_of(*_EXABGP_LOG_LEVELS),
            e.get("log_level", exabgp.log_level),
            exabgp.log_level,
        )
        exabgp = ExabgpSettings(
            api=api,
            reactor_speed=float(speed) if speed is not None else None,
            tuned=c.collect(_bool, e.get("tuned", exabgp.tuned), "exabgp.tuned", default=exabgp.tuned),
            chunk=c.collect(
                _int, e.get("chunk", exabgp.chunk), "exabgp.chunk", 1, 100000, default=exabgp.chunk
            ),
            log_level=level,
        )
    log_level = c.check("log_level", one_of(*_LOG_LEVELS), top.get("log_level", "info"), "info")
    v6 = None
    if top.get("local_address_v6") is not None:
        v6 = c.collect(_ip, top["local_address_v6"], "local_address_v6", 6, default=None)
    cluster_id = None
    if top.get("cluster_id") is not None:
        cluster_id = c.collect(_ipv4, top["cluster_id"], "cluster_id", default=None)
    listen = c.collect(_bool, top.get("listen", True), "listen", default=True)
    port = c.collect(_int, top.get("port", 179), "port", 1, 65535, default=179)
    local_pref = c.collect(
        _int, top.get("default_local_pref", DEFAULT_LOCAL_PREF), "default_local_pref", 0, (1 << 32) - 1,
        default=DEFAULT_LOCAL_PREF,
    )  # fmt: skip
    c.raise_if_any()
    return ReflectorConfig(
        router_id=router_id,
        asn=asn,
        local_address=local_address,
        local_address_v6=v6,
        cluster_id=cluster_id,
        listen=listen,
        port=port,
        families=tuple(families),
        metrics=metrics,
        timers=timers,
        igp_metrics=igp,
        default_local_pref=local_pref,
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
        raise ConfigError([f"{source}: {e}" for e in exc.errors]) from None
