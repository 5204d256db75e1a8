"""``netkit dns``: the node-local caching DNS responder's command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from dnscache.config import PARSERS, ServeConfig, load, merge, with_resolv_conf
from dnscache.resolvconf import parse_resolv_conf
from netkit.fields import ConfigError

SERVE_HELP = """\
Serve DNS on every --listen address (UDP and TCP) as a node-local cache in front of the
upstreams, the way NodeLocal DNSCache (CoreDNS cache + forward) does, and keep answering while
the upstreams fail: health-checked upstreams with hedged queries, serve-stale (RFC 8767),
prefetch, negative caching (RFC 2308) and request coalescing.

Upstreams: --upstream ADDR[:PORT] (repeatable). With none given, the nameservers of
--resolv-conf (default /etc/resolv.conf) are used. Stub domains: --zone ZONE=ADDR[,ADDR...]
sends ZONE and everything below it to its own upstreams; the longest matching zone wins.

Configuration file (--config FILE, YAML): the same keys as the long flags, with underscores or
dashes, e.g.

    listen: ["169.254.20.10:53", "10.96.0.10:53"]
    upstream: ["10.96.0.10:53"]
    zone: {cluster.local: ["10.96.0.10"], in-addr.arpa: ["10.96.0.10"]}
    metrics: "169.254.20.10:9253"
    cache_size: 100000
    stale_window: 86400

Flags override the file. SIGHUP re-reads both and applies upstreams, zones and cache limits
without dropping a query or the cache.

Metrics at http://METRICS/metrics (netkit_dns_requests_total, netkit_dns_responses_total{rcode},
netkit_dns_cache_hits_total, netkit_dns_served_stale_total, netkit_dns_upstream_healthy{upstream},
...), liveness at /health, readiness at /ready.

Examples:
  netkit dns serve --listen 127.0.0.1:5353 --upstream 127.0.0.1:5300 --metrics 127.0.0.1:9253
  netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10 --workers 2
  netkit dns serve --config /etc/netkit/dns.yaml
"""

RESTART_HELP = """\
Restart a running `netkit dns serve` without losing a query: it snapshots its cache, starts a new
process (same binary and arguments, so this is also how an upgrade is rolled out) that inherits
its listening sockets and warms its cache from the snapshot, and once the new process serves it
stops reading and drains the queries it has in flight. Prints {"old_pid": N, "new_pid": M}.
SIGUSR2 to the server does the same without a reply.

  netkit dns restart --control /run/netkit/dns.ctl
"""

# flag name -> (help, metavar or None for booleans, repeatable)
FLAG_HELP: dict[str, tuple[str, str | None, bool]] = {
    "listen": ("address to serve on, UDP and TCP (repeatable; default 127.0.0.1:53)", "ADDR:PORT", True),
    "upstream": (
        "upstream resolver (repeatable; default: nameservers of --resolv-conf)",
        "ADDR[:PORT]",
        True,
    ),
    "zone": ("stub domain with its own upstreams (repeatable)", "ZONE=ADDR[:PORT][,ADDR...]", True),
    "metrics": ("serve /metrics, /health and /ready here", "ADDR:PORT", False),
    "cache_size": ("maximum cache entries (default 10000)", "N", False),
    "cache_bytes": ("maximum cache memory, e.g. 64M (default 48M)", "SIZE", False),
    "min_ttl": ("lower TTL clamp for cached answers, seconds (default 0)", "S", False),
    "max_ttl": ("upper TTL clamp for cached answers, seconds (default 86400)", "S", False),
    "neg_max_ttl": ("upper bound for negative caching, seconds (default 3600)", "S", False),
    "stale_window": ("serve expired answers for this long after expiry, seconds (default 86400)", "S", False),
    "stale_ttl": ("TTL of stale answers (default 30, RFC 8767)", "S", False),
    "stale_answer_timeout": (
        "answer from stale data when upstreams take longer than this (default 0.4)",
        "S",
        False,
    ),
    "failure_recheck": (
        "after a failed refresh serve stale without asking upstreams for this long (default 30)",
        "S",
        False,
    ),
    "deadline": ("give up on a query after this long and answer SERVFAIL (default 2.0)", "S", False),
    "attempt_timeout": ("timeout of one exchange with one upstream (default 1.0)", "S", False),
    "max_attempts": ("upstream attempts per query, hedges included (default 3)", "N", False),
    "max_fails": (
        "consecutive failures before an upstream is marked down and probed (default 2)",
        "N",
        False,
    ),
    "hedge": (
        "send a hedged query to the next upstream after an adaptive delay (default true)",
        "BOOL",
        False,
    ),
    "prefetch": ("refresh popular entries before they expire (default true)", "BOOL", False),
    "prefetch_min_hits": ("hits an entry needs before it is prefetched (default 2)", "N", False),
    "dns0x20": (
        "randomise the query name's case towards upstreams and require it echoed (default false)",
        "BOOL",
        False,
    ),
    "workers": ("processes sharing the listen sockets with SO_REUSEPORT (default 1)", "N", False),
    "resolv_conf": (
        "where to read upstreams from when none are given (default /etc/resolv.conf)",
        "PATH",
        False,
    ),
    "cache_file": ("snapshot the cache here on stop and restart; warm it from here on start", "PATH", False),
    "control": ("unix socket for `netkit dns restart` (zero-gap handover) and status", "PATH", False),
    "tcp_idle_timeout": ("close idle TCP connections after this long (default 10)", "S", False),
    "max_tcp_connections": ("concurrent TCP connections (default 1024)", "N", False),
    "log_level": ("debug, info, warning or error (default info)", "LEVEL", False),
}


def add_parser(sub: Any) -> None:
    dns = sub.add_parser(
        "dns", help="node-local caching DNS", description="Node-local caching DNS responder."
    )
    dsub = dns.add_subparsers(dest="dns_command", required=True, metavar="COMMAND")
    serve = dsub.add_parser(
        "serve",
        help="run the caching responder",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", "-c", metavar="FILE", help="YAML file with the same keys as the flags")
    for key, (text, metavar, repeat) in FLAG_HELP.items():
        assert key in PARSERS, key
        flag = "--" + key.replace("_", "-")
        serve.add_argument(flag, dest=key, metavar=metavar, help=text, action="append" if repeat else "store")
    serve.add_argument("--check", action="store_true", help="validate the configuration, print it and exit")
    serve.set_defaults(func=cmd_serve)

    restart = dsub.add_parser(
        "restart",
        help="zero-gap restart of a running `netkit dns serve --control PATH`",
        description=RESTART_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restart.add_argument("--control", required=True, metavar="PATH", help="the server's --control socket")
    restart.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the new process (default 15)"
    )
    restart.set_defaults(func=cmd_restart)

    demo = dsub.add_parser(
        "demo", help="start real upstreams and the cache on loopback, show it answering and failing over"
    )
    demo.add_argument("--names", type=int, default=200, help="names in the demo zone (default 200)")
    demo.set_defaults(func=cmd_demo)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in FLAG_HELP if getattr(args, k, None) is not None}


def read_config_file(path: str) -> dict[str, Any]:
    import yaml  # only when there is a file: the serving process is smaller without it

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def build_config(config_file: str | None, flags: dict[str, Any]) -> ServeConfig:
    base = load(read_config_file(config_file), config_file) if config_file else ServeConfig()
    cfg = merge(base, flags)
    if not cfg.upstream:
        try:
            text = Path(cfg.resolv_conf).read_text()
        except OSError as exc:
            raise ConfigError(
                f"no --upstream given and {cfg.resolv_conf} cannot be read: {exc.strerror}"
            ) from None
        cfg = with_resolv_conf(cfg, parse_resolv_conf(text))
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    from netkit import logs

    flags = flag_values(args)
    try:
        cfg = build_config(args.config, flags)
    except ConfigError as exc:
        print(f"netkit dns serve: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for key in FLAG_HELP:
            value = getattr(cfg, key)
            shown = (
                [str(v) for v in value]
                if isinstance(value, tuple)
                else (str(value) if value is not None else None)
            )
            print(f"{key}: {shown}")
        return 0
    logs.setup(cfg.log_level)
    from dnscache.runner import event_loop_policy, serve

    def reload_config() -> ServeConfig:
        return build_config(args.config, flags)

    try:
        if cfg.workers > 1:
            from dnscache.workers import supervise

            return supervise(cfg, reload_config)
        event_loop_policy()
        asyncio.run(serve(cfg, reload_config))
    except OSError as exc:
        print(f"netkit dns serve: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dnscache.demo import run_demo

    result: int = run_demo(names=args.names)
    return result


def cmd_restart(args: argparse.Namespace) -> int:
    import json
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(args.timeout + 5)
            sock.connect(args.control)
            sock.sendall(json.dumps({"cmd": "restart", "timeout": args.timeout}).encode() + b"\n")
            reply = sock.makefile("rb").readline()
    except OSError as exc:
        print(f"netkit dns restart: {args.control}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        result = json.loads(reply)
    except ValueError:
        print(f"netkit dns restart: no answer from {args.control}", file=sys.stderr)
        return 1
    if "error" in result:
        print(f"netkit dns restart: {result['error']}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
