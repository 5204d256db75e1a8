"""Network namespaces by name (``/run/netns/<name>``, as ``ip netns`` makes them): run a command
in one, or a function on a thread that joined one (effects)."""

from __future__ import annotations

import ctypes
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


def netns_exec(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``netns`` by ``ip netns exec``, which execs it (the PID a caller holds
    is the command's); ``argv`` itself when ``netns`` is None."""
    if netns is None:
        return list(argv)
    return [shutil.which("ip") or "ip", "netns", "exec", netns, *argv]


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a short-lived thread that has joined ``/run/netns/<netns>`` (None: here;
    a path such as a CNI runtime's ``/proc/<pid>/ns/net``: that namespace).

    setns(2) switches only the calling thread, so the rest of the process stays where it is, and
    a socket keeps the namespace it was created in: sockets made by ``fn`` work in that namespace
    from any thread. (Python 3.11 has no ``os.setns``: libc's, through ctypes.)
    """
    if netns is None:
        return fn()
    path = netns if netns.startswith("/") else f"/run/netns/{netns}"
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({path}): {os.strerror(code)}")
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=run, name=f"netns-{os.path.basename(netns)}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
