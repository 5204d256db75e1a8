"""``netkit-cni``: the CNI plugin that puts a pod on an L2Network's bridge (effects).

ADD: the network's bridge on this node (``nkbr-...``, which the node agent builds; waited for up
to ``bridgeTimeoutSeconds``, else error 11, try again later), a veth whose host end
(``host_veth_name``) carries the alias ``netkit:cni:<network>`` (so the agent keeps it on the
bridge: a declared port) and whose other end is ``CNI_IFNAME`` in ``CNI_NETNS``, both at the
bridge's MTU; addresses from the IPAM plugin the configuration names (the reference
``host-local`` or ``static``, run as the spec says: same environment, same configuration on
stdin), put on the pod's interface with its routes; the attachment recorded for the agent.
Anything failing after the veth exists removes it, and after IPAM, releases the address.

DEL: the IPAM plugin's DEL, the veth and the record removed; whatever is already gone is
fine (a second DEL, a netns that vanished). CHECK: the pod's interface, MAC and addresses as
prevResult says, the host end on the bridge, the IPAM plugin's CHECK. VERSION: the versions.

``NETKIT_CNI_CRASH=veth|ipam`` kills the plugin (SIGKILL) right after that stage, for the
tests that prove a DEL after a crash leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from netkit.cni.attachments import Attachment, record_attachment, remove_attachment
from netkit.cni.core.spec import (
    CHECK_FAILED,
    INTERFACE_EXISTS,
    IO_FAILURE,
    IPAM_FAILED,
    NETWORK_NOT_HERE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
    Request,
    host_veth_name,
    parse_request,
    result,
    version_result,
)
from netkit.cni.netlink import Netlink
from netkit.l2.core.state import attachment_alias, bridge_name, owner_alias

__all__ = ["main", "run"]

Obj = dict[str, Any]


def _crash_after(stage: str) -> None:
    if os.environ.get("NETKIT_CNI_CRASH") == stage:
        os.kill(os.getpid(), signal.SIGKILL)


# -- IPAM --------------------------------------------------------------------------------------


def _ipam(req: Request, command: str) -> Obj:
    """The IPAM plugin run as a runtime runs a plugin: its result, or CniError (101) with its
    own error message."""
    assert req.conf is not None
    kind = str(req.conf.ipam["type"])
    binary = next(
        (os.path.join(d, kind) for d in req.path if os.access(os.path.join(d, kind), os.X_OK)), None
    )
    if binary is None:
        raise CniError(IPAM_FAILED, f"IPAM plugin {kind} not found", f"CNI_PATH={':'.join(req.path)}")
    env = {**os.environ, **req.env, "CNI_COMMAND": command}  # the runtime's variables, also when served
    env.pop("NETKIT_CNI_CRASH", None)
    try:
        done = subprocess.run(
            [binary], input=json.dumps(dict(req.conf.raw)).encode(), env=env, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(IPAM_FAILED, f"IPAM plugin {kind} failed to run", str(exc)) from None
    if done.returncode != 0:
        try:
            err = json.loads(done.stdout)
            why = f"{err.get('msg', '')} {err.get('details', '')}".strip()
        except ValueError:
            why = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise CniError(IPAM_FAILED, f"IPAM plugin {kind} {command} failed", why)
    if command != "ADD":
        return {}
    try:
        out: Obj = json.loads(done.stdout)
    except ValueError as exc:
        raise CniError(IPAM_FAILED, f"IPAM plugin {kind} returned no JSON", str(exc)) from None
    return out


# -- ADD -----------------------------------------------------------------------------------------


def _bridge(network: str, timeout: float) -> tuple[int, str, int]:
    """(index, MAC, MTU) of ``network``'s bridge, waiting for the agent to build it."""
    name = bridge_name(network)
    deadline = time.monotonic() + timeout
    with Netlink() as nl:
        while True:
            link = nl.link(name)
            if link is not None:
                if link.alias != owner_alias(network):
                    raise CniError(
                        NETWORK_NOT_HERE,
                        f"{name} is not network {network}'s bridge",
                        "its alias says otherwise",
                    )
                return link.index, link.address or "", link.mtu
            if time.monotonic() >= deadline:
                raise CniError(
                    TRY_AGAIN_LATER,
                    f"network {network} has no bridge {name} on this node",
                    "is the node selected by the L2Network, and its agent running?",
                )
            time.sleep(0.1)


def _netns_fd(netns: str) -> int:
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(
            UNKNOWN_CONTAINER, f"CNI_NETNS {netns} cannot be opened", exc.strerror or str(exc)
        ) from None


def _configure_pod(netns: str, ifname: str, mtu: int, ipam: Mapping[str, Any]) -> str:
    """Inside the pod's namespace: up, MTU, addresses, routes; its MAC."""
    import ipaddress

    with Netlink(netns) as nl:
        link = nl.link(ifname)
        if link is None:
            raise OSError(f"{ifname} vanished from {netns}")
        nl.set_link(ifname, mtu=mtu, state="up")
        gateways: dict[int, str | None] = {}
        for ip in ipam.get("ips") or ():
            iface = ipaddress.ip_interface(str(ip["address"]))
            nl.add_address(link.index, str(iface.ip), iface.network.prefixlen)
            gateways.setdefault(iface.version, ip.get("gateway"))
        for route in ipam.get("routes") or ():
            dst = ipaddress.ip_network(str(route["dst"]), strict=False)
            gw = route.get("gw") or gateways.get(dst.version)
            nl.replace_route(str(dst.network_address), dst.prefixlen, link.index, gw)
        return link.address or ""


def _add(req: Request) -> Obj:
    conf = req.conf
    assert conf is not None
    bridge_index, bridge_mac, mtu = _bridge(conf.network, conf.bridge_timeout)
    fd = _netns_fd(req.netns)
    host = host_veth_name(req.container_id, req.ifname)
    try:
        with Netlink(req.netns) as pod:
            if pod.link(req.ifname) is not None:
                raise CniError(INTERFACE_EXISTS, f"{req.ifname} already exists in {req.netns}")
        with Netlink() as nl:
            nl.delete_link(host)  # a crashed ADD's, by its name: ours to replace
            nl.add_veth(host, req.ifname, fd)
            nl.set_link(host, ifalias=attachment_alias(conf.network))
            nl.set_link(host, mtu=mtu, master=bridge_index, state="up")
            made = nl.link(host)
            host_mac = made.address if made is not None and made.address else ""
    except CniError:
        raise
    except OSError as exc:
        _delete_veth(host)
        raise CniError(IO_FAILURE, f"cannot create the veth {host} for {req.ifname}", str(exc)) from None
    finally:
        os.close(fd)
    _crash_after("veth")
    try:
        ipam = _ipam(req, "ADD")
    except CniError:
        _delete_veth(host)
        raise
    _crash_after("ipam")
    try:
        mac = _configure_pod(req.netns, req.ifname, mtu, ipam)
        ips = tuple(str(ip["address"]) for ip in ipam.get("ips") or ())
        record_attachment(
            conf.state_dir, Attachment(conf.network, req.container_id, req.ifname, host, mac, ips, req.pod)
        )
    except (OSError, ValueError, KeyError) as exc:
        with contextlib.suppress(CniError):
            _ipam(req, "DEL")
        _delete_veth(host)
        raise CniError(IO_FAILURE, f"cannot configure {req.ifname} in {req.netns}", str(exc)) from None
    return result(
        conf.version,
        (bridge_name(conf.network), bridge_mac),
        (host, host_mac),
        (req.ifname, mac, req.netns),
        ipam,
    )


def _delete_veth(host: str) -> None:
    """The host end (the pod's end goes with it); already gone is fine."""
    with contextlib.suppress(OSError), Netlink() as nl:
        nl.delete_link(host)


# -- DEL, CHECK ------------------------------------------------------------------------------------


def _del(req: Request) -> None:
    assert req.conf is not None
    _ipam(req, "DEL")
    _delete_veth(host_veth_name(req.container_id, req.ifname))
    remove_attachment(req.conf.state_dir, req.container_id, req.ifname)


def _check(req: Request) -> None:
    conf = req.conf
    assert conf is not None and conf.prev_result is not None
    prev = conf.prev_result
    mine = [i for i in prev.get("interfaces") or () if i.get("name") == req.ifname and i.get("sandbox")]
    if not mine:
        raise CniError(CHECK_FAILED, f"prevResult has no interface {req.ifname} in a sandbox")
    want_mac = str(mine[0].get("mac", "")).lower()
    want_ips = {str(ip["address"]) for ip in prev.get("ips") or ()}
    host = host_veth_name(req.container_id, req.ifname)
    os.close(_netns_fd(req.netns))
    problems = []
    with Netlink(req.netns) as pod:
        link = pod.link(req.ifname)
        addrs = {a.cidr for a in pod.addresses(link.index)} if link is not None else set()
    if link is None:
        problems.append(f"{req.ifname} is missing from {req.netns}")
    else:
        mac = (link.address or "").lower()
        if want_mac and mac != want_mac:
            problems.append(f"{req.ifname} has MAC {mac}, prevResult says {want_mac}")
        if not want_ips <= addrs:
            problems.append(f"{req.ifname} lacks {sorted(want_ips - addrs)}")
    with Netlink() as nl:
        hl, bridge = nl.link(host), nl.link(bridge_name(conf.network))
    if hl is None:
        problems.append(f"the host end {host} is missing")
    elif bridge is None or hl.master != bridge.index:
        problems.append(f"{host} is not on {bridge_name(conf.network)}")
    if problems:
        raise CniError(CHECK_FAILED, "the attachment differs from prevResult", "; ".join(problems))
    _ipam(req, "CHECK")


# -- entry point ---------------------------------------------------------------------------------


def run(env: Mapping[str, str], stdin: bytes) -> tuple[int, Obj | None]:
    """(exit status, what goes to stdout) for one invocation."""
    version = "1.0.0"
    try:
        req = parse_request(env, stdin)
        version = req.conf.version if req.conf is not None else version
        if req.command == "VERSION":
            return 0, version_result(req.asked)
        if req.command == "ADD":
            return 0, _add(req)
        if req.command == "DEL":
            _del(req)
            return 0, None
        _check(req)
        return 0, None
    except CniError as exc:
        err = exc if exc.version == version else CniError(exc.code, exc.msg, exc.details, version)
        return 1, err.to_dict()


def main() -> int:
    """The ``netkit-cni`` executable."""
    code, out = run(os.environ, sys.stdin.buffer.read())
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
