"""ExaBGP's entry point, with the reflector's hooks (effects).

``python -m bgp.reflector.exabgp_main [--wire] [--tuned] exabgp.conf`` runs the pinned ExaBGP as
its own ``exabgp`` script does, after changing what the flags ask for. Everything here patches
ExaBGP internals, so it is applied only to the version pinned in pyproject.toml (``PINNED``) and
refused on any other (a clear error, not a half-working reflector).

``--wire`` (the reflector's default API mode): UPDATEs bypass ExaBGP's per-route Python objects
in both directions; ExaBGP still runs every session (TCP and MD5, OPEN and capabilities,
keepalives and hold timers, NOTIFICATIONs, collisions, reconnects).

- in: the API process subscribes to raw packets (``receive { packets; ... }``); ExaBGP writes
  each UPDATE to it as hex (``hexstring`` is replaced by ``bytes.hex``, 40x faster) and no longer
  parses it (``Update.unpack_message`` returns an empty UPDATE: with ``adj-rib-in false``
  ExaBGP keeps nothing from it). Checking UPDATEs (RFC 7606) is then the API process's job
  (``wire.UpdateDecoder``);
- out: a new API command ``neighbor A netkit-raw HEX [HEX ...]`` queues complete BGP messages
  built by the API process; each session's main loop (``Peer._main``, wrapped) writes them in
  order between its own steps, never in the middle of one of ExaBGP's own messages (every write
  goes through ``Connection.writer``, wrapped to say when one is half done);
- ``neighbor A netkit-notify CODE SUBCODE`` closes the session with that NOTIFICATION (ExaBGP's
  ``teardown`` only sends Cease): an UPDATE that cannot be parsed is answered with code 3.

Measured on the benchmark lab (BIRD -> reflector -> BIRD, 100,000 /32s): raw passing through
ExaBGP took 0.30 s, as BIRD reflecting them did; ExaBGP's text API took 3.1 s with ``--tuned``.

``--tuned`` (text API mode only): two scheduling fixes, measured on 10,000 prefixes (1.4 s -> 0.24
s at reactor speed 0.1): ``Configuration.inject_change`` no longer deep-copies every route of a
command that names one neighbour with a next hop other than "self" (the copy was 40 % of
ExaBGP's CPU time), and ``ASYNC.LIMIT`` (API work per reactor loop) goes from 50 to 5,000 steps.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ASYNC_LIMIT", "PINNED", "apply_tuning", "apply_wire_hooks", "main"]

PINNED = "4.2.25"
ASYNC_LIMIT = 5000
RAW_COMMAND = "netkit-raw"
NOTIFY_COMMAND = "netkit-notify"
_WRITES_PER_TURN = 64  # raw messages written per session turn before the reactor serves others


def _check_version() -> None:
    from exabgp.version import version

    if version != PINNED:
        raise SystemExit(
            f"netkit: ExaBGP {version} is installed, the reflector's hooks are written for {PINNED} "
            "(pip install exabgp==" + PINNED + ", or set exabgp: {api: text, tuned: false})"
        )


def _inject_change(original: Callable[..., bool]) -> Callable[..., bool]:
    def inject_change(self: Any, peers: list[str], change: Any) -> bool:
        if len(peers) != 1 or change.nlri.nexthop.SELF:
            return original(self, peers, change)
        neighbor = self.neighbors.get(peers[0])
        if neighbor is None:
            return True  # as the original: a name that matches no neighbour changes nothing
        if change.nlri.family() not in neighbor.families():
            return original(self, peers, change)  # the original logs this
        neighbor.rib.outgoing.add_to_rib(change)
        return True

    inject_change.netkit = True  # type: ignore[attr-defined]
    return inject_change


def apply_tuning() -> list[str]:
    """The two text-mode fixes; returns what was changed."""
    from exabgp.configuration.configuration import Configuration
    from exabgp.reactor.asynchronous import ASYNC

    _check_version()
    applied = []
    if not getattr(Configuration.inject_change, "netkit", False):
        Configuration.inject_change = _inject_change(Configuration.inject_change)
        applied.append("inject_change without deep copy")
    if ASYNC.LIMIT < ASYNC_LIMIT:
        ASYNC.LIMIT = ASYNC_LIMIT
        applied.append(f"ASYNC.LIMIT {ASYNC_LIMIT}")
    return applied


def apply_wire_hooks() -> list[str]:
    """The wire-mode hooks (see the module docstring); returns what was changed."""
    import exabgp.reactor.api.response.json as json_response
    from exabgp.bgp.message import Notify
    from exabgp.bgp.message.update import Update
    from exabgp.bgp.message.update.attribute import Attributes
    from exabgp.reactor.api.command.command import Command
    from exabgp.reactor.api.command.limit import extract_neighbors, match_neighbors
    from exabgp.reactor.network.connection import Connection
    from exabgp.reactor.peer import ACTION, Peer

    _check_version()
    if getattr(Peer._main, "netkit", False):
        return []

    def hexstring(value: bytes) -> str:
        return "0x" + bytes(value).hex().upper()

    json_response.hexstring = hexstring

    stub: list[Any] = []

    def unpack_message(cls: Any, data: bytes, direction: Any, negotiated: Any) -> Any:
        if not stub:  # Attributes() reads ExaBGP's settings, which exist only once it runs
            stub.append(Update([], Attributes()))
        return stub[0]

    Update.unpack_message = classmethod(unpack_message)

    original_writer = Connection.writer

    def writer(self: Any, data: bytes) -> Iterator[bool]:
        self.netkit_busy = True
        try:
            yield from original_writer(self, data)
        finally:
            self.netkit_busy = False

    Connection.writer = writer

    original_main = Peer._main

    def _main(self: Any) -> Iterator[Any]:
        queue = self.__dict__.setdefault("netkit_raw", collections.deque())
        queue.clear()  # a new session: nothing queued for an earlier one goes out
        self.netkit_notify = None
        inner = original_main(self)
        writing: Iterator[bool] | None = None
        while True:
            conn = self.proto.connection if self.proto else None
            written = 0
            while conn is not None and (
                writing is not None or (queue and not getattr(conn, "netkit_busy", False))
            ):
                if writing is None:
                    writing = conn.writer(queue.popleft())
                if next(writing, True):
                    writing = None
                    written += 1
                    if written >= _WRITES_PER_TURN:
                        break
                else:
                    break  # the socket is full: finish this message on a later turn
            if writing is not None:
                yield ACTION.NOW  # ExaBGP's own steps wait until our message is complete
                continue
            if self.netkit_notify is not None:
                code, subcode = self.netkit_notify
                self.netkit_notify = None
                raise Notify(code, subcode, "netkit reflector: closing the session")
            try:
                action = next(inner)
            except StopIteration:
                return
            yield ACTION.NOW if queue else action

    _main.netkit = True  # type: ignore[attr-defined]
    Peer._main = _main

    def _established(reactor: Any, line: str) -> tuple[list[Any], str]:
        descriptions, command = extract_neighbors(line)
        keys = match_neighbors(reactor.established_peers(), descriptions)
        return [reactor._peers[k] for k in keys if k in reactor._peers], command

    @Command.register("text", RAW_COMMAND)  # type: ignore[untyped-decorator]
    def netkit_raw(self: Any, reactor: Any, service: str, line: str) -> bool:
        try:
            peers, command = _established(reactor, line)
            messages = [bytes.fromhex(h) for h in command.split()[1:]]
        except (ValueError, IndexError):
            reactor.processes.answer_error(service)
            return False
        for peer in peers:  # a peer that is not established gets nothing: it gets the table when it is
            peer.__dict__.setdefault("netkit_raw", collections.deque()).extend(messages)
        reactor.processes.answer_done(service)
        return True

    @Command.register("text", NOTIFY_COMMAND)  # type: ignore[untyped-decorator]
    def netkit_notify(self: Any, reactor: Any, service: str, line: str) -> bool:
        try:
            peers, command = _established(reactor, line)
            _, code, subcode = command.split()
            pair = (int(code), int(subcode))
        except (ValueError, IndexError):
            reactor.processes.answer_error(service)
            return False
        for peer in peers:
            peer.netkit_notify = pair
        reactor.processes.answer_done(service)
        return True

    return ["packets as bytes.hex", "no UPDATE parsing", "netkit-raw", "netkit-notify"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    while args and args[0] in ("--wire", "--tuned"):
        flag = args.pop(0)
        applied = apply_wire_hooks() if flag == "--wire" else apply_tuning()
        print(f"netkit: ExaBGP {PINNED} {flag[2:]}: {', '.join(applied)}", file=sys.stderr)
    from exabgp.application import run_exabgp

    sys.argv = ["exabgp", *args]
    result = run_exabgp()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
