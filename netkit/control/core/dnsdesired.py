"""A DNSCache object -> the node-local cache's configuration (pure): the keys of
``netkit dns serve -f``, validated by the same loader.

``upstreamService`` is resolved through the Services the caller read (namespace/name ->
ClusterIP). A Service that is missing, or has no ClusterIP, is a problem and **no
configuration**: the cache keeps running on what it has, rather than being told "no upstreams".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dnscache.core.config import ServeConfig, load, to_dict
from netkit.base.fields import ConfigError

__all__ = ["DnsDesired", "desired_dns", "serve_document"]


@dataclass(frozen=True, slots=True)
class DnsDesired:
    config: ServeConfig | None  # None: keep what runs
    problems: tuple[str, ...]

    def document(self) -> dict[str, Any] | None:
        """The configuration as the YAML document ``netkit dns serve -f`` reads."""
        return None if self.config is None else to_dict(self.config)


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def serve_document(
    spec: Mapping[str, Any], services: Mapping[tuple[str, str], str]
) -> tuple[dict[str, Any], list[str]]:
    """``spec`` as ``dns serve`` keys, and what could not be resolved."""
    problems: list[str] = []
    doc: dict[str, Any] = {"listen": list(spec.get("listen", ["169.254.20.10:53"]))}
    service = spec.get("upstreamService")
    if service is not None:
        key = (str(service["namespace"]), str(service["name"]))
        ip = services.get(key)
        if not ip or ip == "None":
            problems.append(f"upstreamService: Service {key[0]}/{key[1]} not found or without a ClusterIP")
        else:
            doc["upstream"] = [_host_port(ip, int(service.get("port", 53)))]
    else:
        doc["upstream"] = list(spec.get("upstreams", []))
    if spec.get("zones"):
        doc["zone"] = [f"{z['zone']}={','.join(z['upstreams'])}" for z in spec["zones"]]
    cache = spec.get("cache") or {}
    for ours, theirs in (
        ("size", "cache_size"),
        ("maxBytes", "cache_bytes"),
        ("minTTL", "min_ttl"),
        ("maxTTL", "max_ttl"),
        ("negativeMaxTTL", "neg_max_ttl"),
    ):
        if ours in cache:
            doc[theirs] = cache[ours]
    stale = spec.get("serveStale") or {}
    if "windowSeconds" in stale:
        doc["stale_window"] = stale["windowSeconds"]
    if "ttlSeconds" in stale:
        doc["stale_ttl"] = stale["ttlSeconds"]
    if "prefetch" in spec:
        doc["prefetch"] = spec["prefetch"]
    return doc, problems


def desired_dns(spec: Mapping[str, Any], services: Mapping[tuple[str, str], str]) -> DnsDesired:
    doc, problems = serve_document(spec, services)
    if problems:
        return DnsDesired(None, tuple(problems))
    try:
        return DnsDesired(load(doc, "DNSCache"), ())
    except ConfigError as exc:
        return DnsDesired(None, tuple(exc.errors))
