"""Configuration of ``netkit dns serve`` (pure): one model, filled from flags or a YAML file with
the same keys, validated with errors that name the key and say what was expected."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnscache.core.wire import Name, WireError, name_from_text, name_to_text
from netkit.base.addr import AddressError, HostPort, parse_hostport
from netkit.base.fields import ConfigError, Errors

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
    dns0x20: bool = False
    workers: int = 1
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
        )

    @property
    def attempt_policy(self) -> AttemptPolicy:
        from dnscache.core.resolution import AttemptPolicy

        return AttemptPolicy(self.deadline, self.attempt_timeout, self.max_attempts, self.hedge)

    @property
    def health_policy(self) -> HealthPolicy:
        from dnscache.core.upstreams import HealthPolicy

        return HealthPolicy(max_fails=self.max_fails)


# -- value parsers -------------------------------------------------------------------------------
def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError(f"expected an integer in [{lo}, {hi}]")
        try:
            n = int(v)
        except ValueError:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {v!r}") from None
        if not lo <= n <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {n}")
        return n

    return parse


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError("expected a number")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number in [{lo}, {hi}], got {v!r}") from None
        if not lo <= x <= hi:
            raise ValueError(f"expected a number in [{lo}, {hi}], got {x}")
        return x

    return parse


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.lower() in ("true", "yes", "on", "1")
    raise ValueError(f"expected true or false, got {v!r}")


def _size(v: Any) -> int:
    """Bytes, with an optional K/M/G (binary) suffix: ``64M``, ``65536``."""
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str) and v.strip():
        text = v.strip().upper().removesuffix("B").removesuffix("I")
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if mult > 1 else text
        if not digits.isdigit():
            raise ValueError(f"expected a size such as 64M, got {v!r}")
        n = int(digits) * mult
    else:
        raise ValueError(f"expected a size such as 64M, got {v!r}")
    if n < 64 * 1024:
        raise ValueError(f"must be at least 64K, got {n}")
    return n


def _list(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def parse(v: Any) -> tuple[Any, ...]:
        values = [v] if isinstance(v, str) else v
        if not isinstance(values, list | tuple):
            raise ValueError("expected a list")
        return tuple(item(x) for x in values)

    return parse


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
    return _list(_zone_route)(v)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else parse(v)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if str(v).lower() not in choices:
            raise ValueError(f"expected {', '.join(choices[:-1])} or {choices[-1]}, got {v!r}")
        return str(v).lower()

    return parse


PARSERS: dict[str, Callable[[Any], Any]] = {
    "listen": _list(_listen),
    "upstream": _list(_upstream),
    "zone": _zones,
    "metrics": _optional(_listen),
    "cache_size": _int(1, 50_000_000),
    "cache_bytes": _size,
    "min_ttl": _int(0, 604800),
    "max_ttl": _int(0, 604800),
    "neg_max_ttl": _int(0, 604800),
    "stale_window": _float(0, 30 * 86400),
    "stale_ttl": _int(1, 86400),
    "stale_answer_timeout": _float(0, 60),
    "failure_recheck": _float(0, 3600),
    "deadline": _float(0.05, 60),
    "attempt_timeout": _float(0.01, 60),
    "max_attempts": _int(1, 10),
    "max_fails": _int(1, 100),
    "hedge": _bool,
    "prefetch": _bool,
    "prefetch_min_hits": _int(1, 1_000_000),
    "prefetch_fraction": _float(0.0, 0.9),
    "dns0x20": _bool,
    "workers": _int(1, 256),
    "keeper": _bool,
    "resolv_conf": str,
    "cache_file": _optional(str),
    "control": _optional(str),
    "takeover": _bool,
    "ready_file": _optional(str),
    "tcp_idle_timeout": _float(0.1, 3600),
    "max_tcp_connections": _int(1, 1_000_000),
    "log_level": _one_of("debug", "info", "warning", "error"),
    "log_format": _one_of("json", "text"),
}


def _parse(values: Mapping[str, Any], source: str, err: Errors) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        key = {"zones": "zone", "upstreams": "upstream"}.get(key, key)
        parser = PARSERS.get(key)
        if parser is None:
            err.add(f"{source}: {raw_key}", f"unknown key; valid keys: {', '.join(sorted(PARSERS))}")
            continue
        try:
            parsed[key] = parser(value)
        except (ValueError, AddressError) as exc:
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
