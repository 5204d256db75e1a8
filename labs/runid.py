"""Per-run identifiers, temp dirs and free loopback ports.

Lab convention: everything a run creates (namespaces, links, daemon files) carries a per-run
prefix ``nk`` + 4 hex chars, so two runs never collide and a leftover is traceable to its run.
"""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["RunDir", "free_port", "make_run_dir", "new_run_id"]


def new_run_id() -> str:
    """Return a fresh run id: ``nk`` followed by 4 random hex chars (e.g. ``nk3fa2``)."""
    return "nk" + secrets.token_hex(2)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """Return a port that is free for both UDP and TCP on ``host``.

    A random port *below* the kernel's ephemeral range (``ip_local_port_range``), accepted only
    if UDP and TCP can both bind it: the kernel never hands such a port to a client socket, so
    the many clients of a test run (HTTP to the API server, DNS queries) cannot take it between
    this check and the server's bind. Two runs picking the same port in that instant is the
    remaining, small, race.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = max(1024, min(_ephemeral_range()[0], 32768) - 22000)
    high = min(_ephemeral_range()[0], 32768) - 1
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randint(low, high)
        udp, tcp = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_STREAM)
        with udp, tcp:
            try:
                udp.bind((host, port))
                tcp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host} after {attempts} attempts")


def make_run_dir(run_id: str | None = None, base: str | Path | None = None) -> Path:
    """Create a per-run temp dir ``<base or /tmp>/<run_id>-XXXXXXXX`` and return its path."""
    rid = run_id or new_run_id()
    return Path(tempfile.mkdtemp(prefix=f"{rid}-", dir=None if base is None else str(base)))


@dataclass
class RunDir:
    """A per-run temp dir; as a context manager it is removed on exit unless ``keep`` is set.

    >>> with RunDir() as rd:          # doctest: +SKIP
    ...     nsd = NsdServer(zones, workdir=rd.path)
    """

    run_id: str = field(default_factory=new_run_id)
    keep: bool = False
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.path = make_run_dir(self.run_id)

    def cleanup(self) -> None:
        """Remove the directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.keep:
            self.cleanup()
