"""etcd (Debian's ``etcd-server``) as the API server's storage, through its v3 JSON gateway: real
revisions (an object's ``resourceVersion`` is its key's mod_revision), compare-and-swap
transactions (409 on a stale update, AlreadyExists on a second create), watches from a revision
and compaction (a watch from before it is 410 Gone).

``EtcdServer`` runs one on loopback ports of its own in a directory of its own.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netkit.base.process import ManagedProcess

__all__ = ["Compacted", "Etcd", "EtcdServer", "Event", "KeyValue"]


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # PUT | DELETE
    kv: KeyValue
    prev: KeyValue | None


class Compacted(Exception):
    """The revision asked for is older than etcd's compaction: a client must list again (410)."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted at {compact_revision}")
        self.compact_revision = compact_revision


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(raw["key"]).decode(),
        _unb64(raw.get("value", "")),
        int(raw.get("mod_revision", 0)),
        int(raw.get("create_revision", 0)),
    )


class Etcd:
    """A client of one etcd member's JSON gateway (one HTTP connection per call: thread-safe)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status != 200:
            message = data.get("error") or data.get("message") or str(data)
            if "compacted" in str(message):
                raise Compacted(0)
            raise OSError(f"etcd {path}: HTTP {resp.status}: {message}")
        return data  # type: ignore[no-any-return]

    def revision(self) -> int:
        return int(self._call("/v3/kv/range", {"key": _b64("\0"), "limit": 1})["header"]["revision"])

    def get(self, key: str) -> KeyValue | None:
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def list_prefix(self, prefix: str, revision: int = 0) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (at ``revision``, 0: now) and the store's revision."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _prefix_end(prefix)}
        if revision:
            body["revision"] = revision
        data = self._call("/v3/kv/range", body)
        return [_kv(kv) for kv in data.get("kvs", [])], int(data["header"]["revision"])

    def create(self, key: str, value: bytes) -> int | None:
        """Put ``key`` if it does not exist; its revision, or None if it does."""
        return self._txn(key, value, {"target": "CREATE", "create_revision": "0"})

    def update(self, key: str, value: bytes, mod_revision: int) -> int | None:
        """Put ``key`` if it is still at ``mod_revision``; the new revision, or None (a conflict)."""
        return self._txn(key, value, {"target": "MOD", "mod_revision": str(mod_revision)})

    def delete(self, key: str, mod_revision: int) -> int | None:
        data = self._call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod_revision)}
                ],
                "success": [{"request_delete_range": {"key": _b64(key)}}],
            },
        )
        return int(data["header"]["revision"]) if data.get("succeeded") else None

    def _txn(self, key: str, value: bytes, compare: dict[str, str]) -> int | None:
        data = self._call(
            "/v3/kv/txn",
            {
                "compare": [{"key": _b64(key), "result": "EQUAL", **compare}],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        return int(data["header"]["revision"]) if data.get("succeeded") else None

    def compact(self, revision: int) -> None:
        self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def watch(
        self, prefix: str, start_revision: int, timeout: float | None = None
    ) -> Iterator[list[Event] | int]:
        """Events under ``prefix`` from ``start_revision`` on, in batches; an int is a progress
        notification (the store's revision, for bookmarks). Raises ``Compacted``."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _prefix_end(prefix),
                "start_revision": str(start_revision),
                "prev_kv": True,
                "progress_notify": True,
            }
        }
        try:
            conn.request("POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"etcd watch: HTTP {resp.status}")
            while True:
                line = resp.readline()
                if not line:
                    return
                result = json.loads(line).get("result", {})
                if int(result.get("compact_revision", 0) or 0):
                    raise Compacted(int(result["compact_revision"]))
                if result.get("canceled"):
                    return
                events = [
                    Event(
                        e.get("type", "PUT"),
                        _kv(e["kv"]),
                        _kv(e["prev_kv"]) if e.get("prev_kv") else None,
                    )
                    for e in result.get("events", [])
                ]
                if events:
                    yield events
                elif not result.get("created"):
                    yield int(result.get("header", {}).get("revision", 0))
        finally:
            conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """One etcd member on loopback, its data in ``directory``; stopped by PID."""

    def __init__(self, directory: Path, name: str = "netkit-lab") -> None:
        self.directory = directory
        self.name = name
        self.client_port, self.peer_port = _free_port(), _free_port()
        self.client = Etcd("127.0.0.1", self.client_port)
        self.process: ManagedProcess | None = None

    def start(self) -> EtcdServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        url, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        self.process = ManagedProcess(
            [
                "etcd",
                "--name", self.name,
                "--data-dir", str(self.directory / "etcd"),
                "--listen-client-urls", url,
                "--advertise-client-urls", url,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}",
                "--log-level", "warn",
                "--experimental-watch-progress-notify-interval", "5s",
            ],
            output=self.directory / "etcd.log",
        )  # fmt: skip

        def up() -> str | None:
            try:
                self.client.revision()
                return None
            except OSError as exc:
                return str(exc)

        try:
            self.process.wait_ready(up, 20, "etcd", lambda: (self.directory / "etcd.log").read_text()[-2000:])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
