"""Configuration of ``netkit dns serve`` (pure): one model, filled from flags or a YAML file with
the same keys, validated with errors that name the key and say what was expected."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnscache.core.wire import Name, WireError, name_from_text, name_to_text
from netkit.base.addr import HostPort, parse_hostport
from netkit.base.fields import (
    ConfigError,
    Errors,
    boolean,
    integer,
    list_of,
    number,
    one_of,
    optional,
    unknown_key,
)

if TYPE_CHECKING:  # imported where used: `netkit dns serve` binds before it loads the resolver
    from dnscache.core.resolution import AttemptPolicy
    from dnscache.core.response import CachePolicy
    from dnscache.core.upstreams import HealthPolicy


@dataclass(frozen=True, slots=True)
class ZoneRoute:
    """A stub domain: queries at or below ``zone`` go to ``upstreams`` (longest suffix wins)."""

    zone: Name
    upstreams: tuple[HostPort, ...]

    def __str__(self) -> str:
        return f"{name_to_text(self.zone)}={','.join(map(str, self.upstreams))}"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 53),)
    upstream: tuple[HostPort, ...] = ()
    zone: tuple[ZoneRoute, ...] = ()
    metrics: HostPort | None = None
    cache_size: int = 10000
    cache_bytes: int = 48 * 1024 * 1024
    min_ttl: int = 0
    max_ttl: int = 86400
    neg_max_ttl: int = 3600
    stale_window: float = 86400.0
    stale_ttl: int = 30
    stale_answer_timeout: float = 0.4
    failure_recheck: float = 30.0
    deadline: float = 2.0
    attempt_timeout: float = 1.0
    max_attempts: int = 10
    max_fails: int = 2
    hedge: bool = True
    prefetch: bool = True
    prefetch_min_hits: int = 2
    prefetch_fraction: float = 0.1
    minimal_responses: bool = True
    dns0x20: bool = False
    workers: int = 1
    fast_path: str = "compiled"
    keeper: bool = False
    resolv_conf: str = "/etc/resolv.conf"
    cache_file: str | None = None
    control: str | None = None
    takeover: bool = False
    ready_file: str | None = None
    tcp_idle_timeout: float = 10.0
    max_tcp_connections: int = 1024
    log_level: str = "info"
    log_format: str = "json"

    @property
    def cache_policy(self) -> CachePolicy:
        from dnscache.core.response import CachePolicy

        return CachePolicy(
            min_ttl=self.min_ttl,
            max_ttl=self.max_ttl,
            neg_max_ttl=self.neg_max_ttl,
            stale_window=self.stale_window,
            stale_ttl=self.stale_ttl,
            prefetch_fraction=self.prefetch_fraction,
            minimal_responses=self.minimal_responses,
        )

    @property
    def attempt_policy(self) -> AttemptPolicy:
        from dnscache.core.resolution import AttemptPolicy

        return AttemptPolicy(self.deadline, self.attempt_timeout, self.max_attempts, self.hedge)

    @property
    def health_policy(self) -> HealthPolicy:
        from dnscache.core.upstreams import HealthPolicy

        return HealthPolicy(max_fails=self.max_fails)


# -- value parsers (netkit.base.fields; a flag's value is text, so text is accepted) -------------
def _size(v: Any) -> int:
    """Bytes, with an optional K/M/G (binary) suffix: ``64M``, ``65536``."""
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str) and v.strip():
        text = v.strip().upper().removesuffix("B").removesuffix("I")
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if mult > 1 else text
        if not digits.isdigit():
            raise ValueError(f"{v!r} is not a size such as 64M")
        n = int(digits) * mult
    else:
        raise ValueError(f"{v!r} is not a size such as 64M")
    if n < 64 * 1024:
        raise ValueError(f"{n} is out of range: must be at least 64K")
    return n


def _listen(v: Any) -> HostPort:
    return parse_hostport(str(v))


def _upstream(v: Any) -> HostPort:
    return parse_hostport(str(v), default_port=53)


def _zone_route(v: Any) -> ZoneRoute:
    text = str(v)
    zone_text, sep, servers = text.partition("=")
    if not sep or not servers.strip():
        raise ValueError(f"{text!r}: expected ZONE=ADDR[:PORT][,ADDR[:PORT]...]")
    try:
        zone = name_from_text(zone_text.strip())
    except WireError as exc:
        raise ValueError(str(exc)) from None
    return ZoneRoute(zone, tuple(_upstream(s) for s in servers.split(",")))


def _zones(v: Any) -> tuple[ZoneRoute, ...]:
    """Flags give ``ZONE=ADDR,...`` strings; a file may also give a mapping zone -> list."""
    if isinstance(v, Mapping):
        items = [f"{z}={','.join(map(str, s if isinstance(s, list) else [s]))}" for z, s in v.items()]
        return tuple(_zone_route(x) for x in items)
    return list_of(_zone_route, single=True)(v)


PARSERS: dict[str, Callable[[Any], Any]] = {
    "listen": list_of(_listen, single=True),
    "upstream": list_of(_upstream, single=True),
    "zone": _zones,
    "metrics": optional(_listen),
    "cache_size": integer(1, 50_000_000, text=True),
    "cache_bytes": _size,
    "min_ttl": integer(0, 604800, text=True),
    "max_ttl": integer(0, 604800, text=True),
    "neg_max_ttl": integer(0, 604800, text=True),
    "stale_window": number(0, 30 * 86400, text=True),
    "stale_ttl": integer(1, 86400, text=True),
    "stale_answer_timeout": number(0, 60, text=True),
    "failure_recheck": number(0, 3600, text=True),
    "deadline": number(0.05, 60, text=True),
    "attempt_timeout": number(0.01, 60, text=True),
    "max_attempts": integer(1, 10, text=True),
    "max_fails": integer(1, 100, text=True),
    "hedge": boolean(text=True),
    "prefetch": boolean(text=True),
    "prefetch_min_hits": integer(1, 1_000_000, text=True),
    "prefetch_fraction": number(0.0, 0.9, text=True),
    "minimal_responses": boolean(text=True),
    "dns0x20": boolean(text=True),
    "workers": integer(1, 256, text=True),
    "fast_path": one_of("compiled", "python", fold_case=True),
    "keeper": boolean(text=True),
    "resolv_conf": str,
    "cache_file": optional(str),
    "control": optional(str),
    "takeover": boolean(text=True),
    "ready_file": optional(str),
    "tcp_idle_timeout": number(0.1, 3600, text=True),
    "max_tcp_connections": integer(1, 1_000_000, text=True),
    "log_level": one_of("debug", "info", "warning", "error", fold_case=True),
    "log_format": one_of("json", "text", fold_case=True),
}


def _parse(values: Mapping[str, Any], source: str, err: Errors) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        key = {"zones": "zone", "upstreams": "upstream"}.get(key, key)
        parser = PARSERS.get(key)
        if parser is None:
            err.add(f"{source}: {raw_key}", unknown_key(sorted(PARSERS)))
            continue
        try:
            parsed[key] = parser(value)
        except ValueError as exc:  # AddressError too
            err.add(f"{source}: {raw_key}", str(exc))
    return parsed


def load(values: Mapping[str, Any], source: str = "config") -> ServeConfig:
    """Validate ``values`` (keys as in a config file; dashes and underscores both accepted);
    ``ConfigError`` lists every problem."""
    err = Errors()
    cfg = ServeConfig(**_parse(values, source, err))
    _check(cfg, source, err)
    err.raise_if_any()
    return cfg


def _loops(cfg: ServeConfig) -> list[HostPort]:
    """Upstreams that are one of our own listen addresses: the same address and port, or the
    port of a wildcard listen address with a loopback or unspecified upstream address. (Other
    addresses of this host behind a wildcard are found by the caller, which can ask the kernel.)"""
    targets = list(dict.fromkeys([*cfg.upstream, *(u for z in cfg.zone for u in z.upstreams)]))
    out = []
    for up in targets:
        ip = ipaddress.ip_address(up.host)
        for listen in cfg.listen:
            if listen.port != up.port or listen.family_is_v6 != up.family_is_v6:
                continue
            wildcard = ipaddress.ip_address(listen.host).is_unspecified
            if listen.host == up.host or ip.is_unspecified or (wildcard and ip.is_loopback):
                out.append(up)
                break
    return out


def _check(cfg: ServeConfig, source: str, err: Errors) -> None:
    if not cfg.listen:
        err.add(f"{source}: listen", "at least one address is required")
    if cfg.min_ttl > cfg.max_ttl:
        err.add(f"{source}: min_ttl", f"{cfg.min_ttl} is above max_ttl ({cfg.max_ttl})")
    if cfg.attempt_timeout > cfg.deadline:
        err.add(f"{source}: attempt_timeout", f"{cfg.attempt_timeout} exceeds deadline ({cfg.deadline})")
    zones = [z.zone for z in cfg.zone]
    if len(set(zones)) != len(zones):
        err.add(f"{source}: zone", "the same zone is given twice")
    if cfg.takeover and cfg.control is None:
        err.add(f"{source}: takeover", "needs control: the socket a predecessor hands its sockets over on")
    if cfg.takeover and cfg.workers > 1:
        err.add(f"{source}: takeover", f"works with workers: 1 only (workers is {cfg.workers})")
    loops = _loops(cfg)
    if loops:
        err.add(
            f"{source}: upstream",
            f"{', '.join(map(str, loops))} is one of our own listen addresses: that is a forwarding loop",
        )


def merge(base: ServeConfig, overrides: Mapping[str, Any], source: str = "flags") -> ServeConfig:
    """Apply flag values over a file's configuration (flags win), validating the result."""
    err = Errors()
    cfg = dataclasses.replace(base, **_parse(overrides, source, err))
    _check(cfg, source, err)
    err.raise_if_any()
    return cfg


def with_resolv_conf(cfg: ServeConfig, upstreams: list[HostPort]) -> ServeConfig:
    if not upstreams:
        raise ConfigError(f"no --upstream given and {cfg.resolv_conf} lists no usable nameserver")
    out = dataclasses.replace(cfg, upstream=tuple(upstreams))
    err = Errors()
    _check(out, cfg.resolv_conf, err)
    err.raise_if_any()
    return out


def to_dict(cfg: ServeConfig) -> dict[str, Any]:
    """Every key of ``cfg`` as a config file writes it: ``load(to_dict(cfg)) == cfg``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "zone":
            value = {name_to_text(z.zone): [str(u) for u in z.upstreams] for z in value}
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        elif isinstance(value, HostPort):
            value = str(value)
        out[f.name] = value
    return out
