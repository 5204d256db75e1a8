"""The node agent's side of the ``netkit-cni`` shim (effects): a unix socket on which each
connection is one plugin invocation (``netkit/cni/shim.c`` describes the protocol), run by
``plugin.run`` in the agent, which has the node's network namespace and the capabilities the
plugin needs (and, in the DaemonSet, the host's /var/run/netns, /proc, /opt/cni/bin and
/var/lib/cni, so the runtime's paths and IPAM plugins are the same as on the node).
Invocations run concurrently, one thread each (a runtime starts pods in parallel).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading

from netkit.base.netns import in_netns
from netkit.base.serving import listen_unix
from netkit.cni.plugin import run

__all__ = ["CniServer"]

log = logging.getLogger("netkit.cni")
MAX_REQUEST = 1 << 20  # a configuration with prevResult is a few kB


class CniServer:
    def __init__(self, path: str, netns: str | None = None) -> None:
        self.path = path
        self.netns = netns  # the node's network namespace when the agent drives one (the lab's)
        self.sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inode = 0
        self.served = 0

    def start(self) -> CniServer:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # one agent per node: a socket left here is a dead one's
        self.sock = listen_unix(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino  # the path's, to know it is still ours at the end
        self.sock.settimeout(0.5)
        self._thread = threading.Thread(target=self._accept, name="cni-server", daemon=True)
        self._thread.start()
        log.info("serving the CNI shim", extra={"socket": self.path})
        return self

    def stop(self) -> None:
        """Stop serving; the path is removed only while it is still ours (in a DaemonSet surge
        the new agent has bound it by then, and its socket must stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.sock is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            self.sock.close()

    def _accept(self) -> None:
        assert self.sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="cni-call", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(120)
            try:
                data = bytearray()
                while len(data) <= MAX_REQUEST:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"\0"):  # no CNI_* variable at all
                    env_part, stdin = b"", bytes(data[1:])
                else:
                    env_part, _, stdin = bytes(data).partition(b"\0\0")
                env = {}
                for item in env_part.split(b"\0"):
                    key, eq, value = item.decode(errors="replace").partition("=")
                    if eq and key.startswith("CNI_"):
                        env[key] = value
                code, out = in_netns(self.netns, lambda: run(env, stdin))
                self.served += 1
                reply = f"{code}\n".encode() + (json.dumps(out).encode() + b"\n" if out is not None else b"")
                conn.sendall(reply)
            except OSError as exc:
                log.warning("a CNI call failed on the socket", extra={"error": str(exc)})
