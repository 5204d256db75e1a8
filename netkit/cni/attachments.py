"""The pods ``netkit-cni`` attached on this node, one JSON file each under
``<stateDir>/attachments/`` (effects): written once an ADD has succeeded, removed by DEL. The
node agent reads them to publish each endpoint (network, pod, MAC, addresses) to the API."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Attachment", "load_attachments", "record_attachment", "remove_attachment"]


@dataclass(frozen=True)
class Attachment:
    network: str
    container_id: str
    ifname: str
    host_veth: str
    mac: str  # the pod interface's
    ips: tuple[str, ...]  # with prefix length
    pod: str | None = None  # namespace/name, from CNI_ARGS


def _path(state_dir: str, container_id: str, ifname: str) -> Path:
    return Path(state_dir) / "attachments" / f"{container_id}-{ifname}.json"


def record_attachment(state_dir: str, att: Attachment) -> None:
    """Written whole or not at all (a rename), so a reader never sees half a record."""
    path = _path(state_dir, att.container_id, att.ifname)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**asdict(att), "ips": list(att.ips)}))
    tmp.replace(path)


def remove_attachment(state_dir: str, container_id: str, ifname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(state_dir, container_id, ifname).unlink()


def load_attachments(state_dir: str) -> list[Attachment]:
    """Every record (an unreadable one raises: never "no pods" because a file is damaged)."""
    out = []
    for path in sorted((Path(state_dir) / "attachments").glob("*.json")):
        raw = json.loads(path.read_text())
        out.append(Attachment(**{**raw, "ips": tuple(raw["ips"])}))
    return out
