"""Running ``netkit dns serve`` in one process: event loop, signals, metrics (effects)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from dnscache.config import ConfigError, ServeConfig
from dnscache.metrics import MetricsServer
from dnscache.server import DnsServer

log = logging.getLogger("netkit.dns")


def event_loop_policy() -> str:
    """Install uvloop when it is there; returns the name of the loop in use."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(
    cfg: ServeConfig,
    reload_config: Callable[[], ServeConfig] | None = None,
    *,
    reuse_port: bool = False,
    with_metrics: bool = True,
    on_started: Callable[[DnsServer], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP re-reads the configuration without dropping a query."""
    server = DnsServer(cfg, reuse_port=reuse_port)
    await server.start()
    metrics = None
    if with_metrics and cfg.metrics is not None:
        metrics = MetricsServer(cfg.metrics, server.snapshot, lambda: server.ready)
        await metrics.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        if reload_config is None:
            return
        try:
            server.reload(reload_config())
            log.info("configuration reloaded", extra={"upstreams": [str(u) for u in server.cfg.upstream]})
        except (ConfigError, OSError) as exc:
            log.error("reload failed, keeping the running configuration", extra={"error": str(exc)})

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info(
        "serving",
        extra={
            "listen": [str(a) for a in cfg.listen],
            "upstreams": [str(u) for u in cfg.upstream],
            "zones": [str(z) for z in cfg.zone],
            "metrics": str(cfg.metrics) if cfg.metrics else None,
        },
    )
    if on_started is not None:
        on_started(server)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        if metrics is not None:
            await metrics.stop()
        await server.stop()
