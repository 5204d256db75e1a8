"""``netkit dns``: the node-local caching DNS responder's command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from dnscache.core.config import PARSERS, ServeConfig, load, merge, to_dict, with_resolv_conf
from dnscache.core.resolvconf import parse_resolv_conf
from netkit.base.addr import HostPort
from netkit.base.fields import ConfigError
from netkit.cli.cmdline import (
    CommandError,
    add_file,
    add_output,
    command,
    emit,
    float_range,
    group,
    int_range,
    require_labs,
)

SERVE_HELP = """\
Serve DNS on every --listen address (UDP and TCP) as a node-local cache in front of the
upstreams, the way NodeLocal DNSCache (CoreDNS cache + forward) does, and keep answering while
the upstreams fail: health-checked upstreams with hedged queries, serve-stale (RFC 8767),
prefetch, negative caching (RFC 2308) and request coalescing.

Upstreams: --upstream ADDR[:PORT] (repeatable). With none given, the nameservers of
--resolv-conf (default /etc/resolv.conf) are used. Stub domains: --zone ZONE=ADDR[,ADDR...]
sends ZONE and everything below it to its own upstreams; the longest matching zone wins.

Configuration file (-f FILE, YAML): the same keys as the long flags, with underscores or dashes,
plus prefetch_fraction (refresh when less than this share of the TTL is left, default 0.1) and
log_format, e.g. for a node whose cache also answers on the kube-dns ClusterIP 10.96.0.10, with
CoreDNS behind the kube-dns-upstream Service 10.96.0.11 (as deploy/dnscache does):

    listen: ["169.254.20.10:53", "10.96.0.10:53"]
    upstream: ["10.96.0.11:53"]
    zone: {cluster.local: ["10.96.0.11"], in-addr.arpa: ["10.96.0.11"]}
    metrics: "169.254.20.10:9253"
    cache_size: 100000
    stale_window: 86400

Flags override the file. --check prints the configuration in effect (file, flags, defaults and
the upstreams taken from --resolv-conf) as YAML with every key, a file -f takes again, and
starts nothing. An upstream that is one of our own listen addresses (also a loopback or local
address behind a wildcard listen address on the same port) is refused as a forwarding loop.
SIGHUP re-reads file and flags and applies upstreams, zones and cache limits without dropping a
query or the cache.

Metrics at http://METRICS/metrics (netkit_dns_requests_total, netkit_dns_responses_total{rcode},
netkit_dns_cache_hits_total, netkit_dns_served_stale_total, netkit_dns_upstream_healthy{upstream},
...), liveness at /healthz, readiness at /readyz (/health and /ready too).

Exit status: 0 stopped by SIGTERM/SIGINT (or --check passed), 1 cannot serve (an address in use,
also by another instance with --workers N: an accidental second instance never shares the
sockets), 2 invalid configuration or usage.
"""

RESTART_HELP = """\
Restart a running `netkit dns serve` without losing a query: it snapshots its cache, starts a new
process (same binary and arguments, so this is also how an upgrade is rolled out) that inherits
its listening sockets and warms its cache from the snapshot, and once the new process serves it
stops reading and drains the queries it has in flight. Prints {"old_pid": N, "new_pid": M}.
SIGUSR2 to the server does the same without a reply. Exit status: 0 handed over, 1 the server
cannot be reached or the new process did not become ready (the old one keeps serving).
"""

DEMO_HELP = """\
Start real upstreams (NSD and Unbound, from Debian's packages) and `netkit dns serve` on loopback,
then show it answering, caching, failing over between upstreams and serving stale answers while
every upstream is down, with the metrics that show it. Everything runs under a temp dir with
high ports and is stopped at the end. Exit status 0 when every step behaved, 1 otherwise.
"""

FAST_PATH_ENV = "NETKIT_DNS_FAST_PATH"  # the default of --fast-path (the test suite's second pass)

# flag name -> (help, metavar or None for booleans, repeatable)
FLAG_HELP: dict[str, tuple[str, str | None, bool]] = {
    "listen": ("address to serve on, UDP and TCP (repeatable; default 127.0.0.1:53)", "ADDR:PORT", True),
    "upstream": (
        "upstream resolver (repeatable; default: nameservers of --resolv-conf)",
        "ADDR[:PORT]",
        True,
    ),
    "zone": ("stub domain with its own upstreams (repeatable)", "ZONE=ADDR[:PORT][,ADDR...]", True),
    "metrics": ("serve /metrics, /healthz and /readyz here", "ADDR:PORT", False),
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
    "max_attempts": ("upstream attempts per query, retransmits and hedges included (default 10)", "N", False),
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
    "minimal_responses": (
        "answer positive questions with the answer section only, as Unbound's minimal-responses "
        "(clients that set DO get the authority and additional records too) (default true)",
        "BOOL",
        False,
    ),
    "dns0x20": (
        "randomise the query name's case towards upstreams and require it echoed (default false)",
        "BOOL",
        False,
    ),
    "workers": ("processes sharing the listen sockets with SO_REUSEPORT (default 1)", "N", False),
    "fast_path": (
        "how UDP cache hits are answered: compiled (batches of recvmmsg/sendmmsg in C, built by "
        f"pip install) or python (the same algorithm, pure Python); {FAST_PATH_ENV} sets it "
        "where the flag is not given (default compiled)",
        "PATH",
        False,
    ),
    "keeper": (
        "serve from a worker process under one that keeps the sockets: a crashed worker is "
        "forked again at once and what arrived meanwhile waits in the queue (default false; "
        "always so with workers > 1)",
        "BOOL",
        False,
    ),
    "resolv_conf": (
        "where to read upstreams from when none are given (default /etc/resolv.conf)",
        "PATH",
        False,
    ),
    "cache_file": ("snapshot the cache here on stop and restart; warm it from here on start", "PATH", False),
    "control": ("unix socket for `netkit dns restart` (zero-gap handover) and status", "PATH", False),
    "takeover": (
        "on start, take the sockets and cache of the instance serving --control (an upgrade; "
        "none there: bind as usual) (default false)",
        "BOOL",
        False,
    ),
    "ready_file": ("created while this process serves, removed when it stops or hands over", "PATH", False),
    "tcp_idle_timeout": ("close idle TCP connections after this long (default 10)", "S", False),
    "max_tcp_connections": ("concurrent TCP connections (default 1024)", "N", False),
    "log_level": ("log threshold (default info)", "LEVEL", False),
    "log_format": ("json: one object per line on stderr; text: for people (default json)", "FORMAT", False),
}

CHOICES: dict[str, list[str]] = {
    "fast_path": ["compiled", "python"],
    "log_level": ["debug", "info", "warning", "error"],
    "log_format": ["json", "text"],
}


def add_parser(sub: Any) -> None:
    dsub = group(sub, "dns", help="node-local caching DNS", description="Node-local caching DNS responder.")
    serve = command(
        dsub,
        "serve",
        help="run the caching responder",
        description=SERVE_HELP,
        kind="daemon",
        log_level="info",
        log_flags=False,  # log_level and log_format are configuration keys, below
        func=cmd_serve,
        examples=[
            "netkit dns serve --listen 127.0.0.1:5353 --upstream 127.0.0.1:5300 --metrics 127.0.0.1:9253",
            "netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10 --workers 2",
            "netkit dns serve -f /etc/netkit/dns.yaml --check",
        ],
    )
    add_file(serve, "YAML file with the same keys as the flags", required=False)
    for key, (text, metavar, repeat) in FLAG_HELP.items():
        assert key in PARSERS, key
        flag = "--" + key.replace("_", "-")
        choices = CHOICES.get(key)
        serve.add_argument(
            flag,
            dest=key,
            metavar=None if choices else metavar,
            choices=choices,
            help=text,
            action="append" if repeat else "store",
        )
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate, print the configuration in effect as YAML (every key; -f takes it again), exit",
    )

    restart = command(
        dsub,
        "restart",
        help="zero-gap restart of a running `netkit dns serve --control PATH`",
        description=RESTART_HELP,
        kind="change",
        func=cmd_restart,
        examples=["netkit dns restart --control /run/netkit/dns.ctl"],
    )
    restart.add_argument("--control", required=True, metavar="PATH", help="the server's --control socket")
    restart.add_argument(
        "--timeout",
        type=float_range(0, 600, lo_open=True),
        default=15.0,
        metavar="S",
        help="seconds to wait for the new process to be ready",
    )
    add_output(restart, default="json")

    demo = command(
        dsub,
        "demo",
        help="start real upstreams and the cache on loopback, show it answering and failing over",
        description=DEMO_HELP,
        kind="lab",
        log_level="warning",
        func=cmd_demo,
        examples=["netkit dns demo"],
    )
    demo.add_argument(
        "--names", type=int_range(10, 100_000), default=200, metavar="N", help="names in the demo zone"
    )


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, and --fast-path from the environment where the flag is not given."""
    flags = {k: getattr(args, k) for k in FLAG_HELP if getattr(args, k, None) is not None}
    if "fast_path" not in flags and os.environ.get(FAST_PATH_ENV):
        flags["fast_path"] = os.environ[FAST_PATH_ENV]
    return flags


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


def local_loops(cfg: ServeConfig) -> list[HostPort]:
    """Upstreams on a port we listen on with a wildcard address, at an address of this host:
    a forwarding loop the pure check cannot see (it does not know the host's addresses)."""
    import ipaddress
    import socket

    wild = {(a.port, a.family_is_v6) for a in cfg.listen if ipaddress.ip_address(a.host).is_unspecified}
    out = []
    for up in dict.fromkeys([*cfg.upstream, *(u for z in cfg.zone for u in z.upstreams)]):
        if (up.port, up.family_is_v6) not in wild:
            continue
        family = socket.AF_INET6 if up.family_is_v6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((up.host, 0))  # succeeds only for an address of this host
            except OSError:
                continue
        out.append(up)
    return out


def effective_config(config_file: str | None, flags: dict[str, Any]) -> ServeConfig:
    cfg = build_config(config_file, flags)
    loops = local_loops(cfg)
    if loops:
        raise ConfigError(
            f"upstream: {', '.join(map(str, loops))} is an address of this host on the port of a "
            "wildcard listen address: that is a forwarding loop"
        )
    return cfg


HANDOVER_ENV = "NETKIT_DNS_HANDOVER"  # dnscache.handover.ENV: a successor inherits its sockets


def cmd_serve(args: argparse.Namespace) -> int:
    from netkit.base import logs

    flags = flag_values(args)
    cfg = effective_config(args.file, flags)
    if args.check:
        emit(to_dict(cfg), "yaml")
        return 0
    logs.setup(cfg.log_level, cfg.log_format)
    listeners = None
    try:
        if cfg.workers == 1 and not cfg.takeover and HANDOVER_ENV not in os.environ:
            # listen first: what arrives while the resolver is imported waits in the queue
            from dnscache.bind import bind_exclusive

            (listeners,) = bind_exclusive(cfg.listen, 1)
        from dnscache.runner import event_loop_policy, serve

        def reload_config() -> ServeConfig:
            return effective_config(args.file, flags)

        if cfg.workers > 1 or cfg.keeper:
            from dnscache.workers import supervise

            return supervise(cfg, reload_config, [listeners] if listeners is not None else None)
        import asyncio

        event_loop_policy()
        asyncio.run(serve(cfg, reload_config, listeners=listeners))
    except OSError as exc:
        raise CommandError(exc.strerror or str(exc)) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    require_labs("netkit dns demo")
    from labs.dnsdemo import run_demo

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
        raise CommandError(f"{args.control}: {exc.strerror or exc}") from None
    try:
        result = json.loads(reply)
    except ValueError:
        raise CommandError(f"no answer from {args.control}") from None
    if "error" in result:
        raise CommandError(str(result["error"]))
    if args.output == "text":
        print(f"handed over: pid {result['old_pid']} -> {result['new_pid']}")
    elif args.output == "json":
        print(json.dumps(result))
    else:
        emit(result, args.output)
    return 0
