"""``netkit bgp reflector``: render exabgp.conf from the reflector config and run ExaBGP (effects).

ExaBGP runs as a child in this process's process group, so killing the group (or Ctrl-C) stops
the whole reflector; Linux also sends it SIGTERM should this process die first
(``PR_SET_PDEATHSIG``). ExaBGP starts the API process (``bgp.reflector.process``) in its own group
and stops it on shutdown; should ExaBGP die, the API process sees its stdin close and exits.
SIGTERM, SIGINT and SIGHUP are passed on to ExaBGP (SIGTERM and SIGINT: shut down, closing every
session with a NOTIFICATION). The exit status is ExaBGP's.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from bgp.reflector.core.config import ReflectorConfig
from bgp.reflector.core.exabgp_conf import exabgp_environment, render_exabgp_conf
from bgp.reflector.process import CONFIG_ENV, MARKER, STATE_ENV
from netkit.base.serving import check_bindable

__all__ = ["CONFIG_COPY", "api_command", "exabgp_command", "prepare", "run"]

log = logging.getLogger("netkit.bgp.reflector")

_PR_SET_PDEATHSIG = 1
CONFIG_COPY = "reflector.yaml"  # in the state dir: the configuration the reflector runs


def api_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "bgp.reflector.process"]


def exabgp_command(cfg: ReflectorConfig, conf: Path, python: str = sys.executable) -> list[str]:
    flags = ["--wire"] if cfg.exabgp.api == "wire" else ["--tuned"] if cfg.exabgp.tuned else []
    return [python, "-m", "bgp.reflector.exabgp_main", *flags, str(conf)]


def prepare(cfg: ReflectorConfig, config_text: str, state_dir: Path) -> tuple[Path, dict[str, str]]:
    """Write ``exabgp.conf`` and the reflector YAML it was rendered from into ``state_dir``;
    returns the former's path and ExaBGP's environment.

    The API process (also when ExaBGP restarts it) reads that copy, not the file given on the
    command line: an edited, broken or deleted file cannot change the neighbours of, or stop, a
    running reflector whose ExaBGP still runs the sessions it was started with."""
    conf = state_dir / "exabgp.conf"
    conf.write_text(render_exabgp_conf(cfg, api_command()))
    config_copy = state_dir / CONFIG_COPY
    config_copy.write_text(config_text)
    env = dict(os.environ)
    env.update(exabgp_environment(cfg, getpass.getuser(), log_destination="stderr"))
    env[CONFIG_ENV] = str(config_copy.resolve())
    env[STATE_ENV] = str(state_dir)
    (state_dir / "environment").write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(env.items()) if k.startswith(("exabgp.", "NETKIT_")))
    )
    return conf, env


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run(
    cfg: ReflectorConfig,
    config_text: str,
    state_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the reflector until ExaBGP exits; returns its exit status.

    Raises OSError before starting anything if the metrics address cannot be listened on."""
    if cfg.metrics is not None:
        check_bindable(cfg.metrics)
    own_dir = state_dir is None
    sdir = Path(tempfile.mkdtemp(prefix="netkit-reflector-")) if state_dir is None else state_dir
    sdir.mkdir(parents=True, exist_ok=True)
    marker = sdir / MARKER
    marker.unlink(missing_ok=True)  # a fresh ExaBGP: the first API process is not a respawn
    try:
        conf, exa_env = prepare(cfg, config_text, sdir)
        if env:
            exa_env.update(env)
        argv = exabgp_command(cfg, conf)
        log.info(
            "starting ExaBGP",
            extra={"argv": argv, "state_dir": str(sdir), "neighbors": [n.address for n in cfg.neighbors]},
        )
        proc = subprocess.Popen(argv, env=exa_env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

        def forward(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            while True:
                try:
                    rc = proc.wait()
                    break
                except InterruptedError:
                    continue
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.info("ExaBGP exited", extra={"status": rc})
        return rc
    finally:
        if own_dir:
            shutil.rmtree(sdir, ignore_errors=True)
