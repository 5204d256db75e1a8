"""A real container runtime attaches a real container through ``netkit-cni``: podman (its CNI
network backend, libcni) running a busybox root filesystem (``--rootfs``: no image pulled) on a
lab node, with a conflist for L2Network blue. The container pings a pod of blue on the other
node across VXLAN; when it exits podman's DEL leaves nothing (no veth, no address, no record).
Before any of it, libcni validates the configuration with VERSION, which netkit-cni answers.

What this machine's sandbox needs, not netkit: podman runs under ``nsenter --net`` (``ip netns
exec`` remounts /sys and hides the cgroup mounts), with runc (crun refuses the hybrid cgroup
layout here) and rlimits no higher than the current ones (no CAP_SYS_RESOURCE to raise them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from labs.runid import RunDir
from tests.cnihelpers import PLUGIN, Runtime, cni_lab

pytestmark = [pytest.mark.root, pytest.mark.peers]
TOOLS = {"podman": "podman", "runc": "runc", "busybox": "busybox-static", "nsenter": "util-linux"}


@pytest.fixture
def runtime(run_dir: RunDir) -> Iterator[Runtime]:
    missing = [f"{t} ({pkg})" for t, pkg in TOOLS.items() if shutil.which(t) is None]
    assert not missing, f"missing: {', '.join(missing)}: make setup installs them"
    with cni_lab(run_dir) as rt:
        yield rt


def test_podman_attaches_a_container_that_reaches_the_other_node(runtime: Runtime, run_dir: RunDir) -> None:
    rt = runtime
    # the pod it talks to, on n2
    conf = rt.conf("blue", "n2")
    rc, peer = rt.call("n2", "ADD", conf, "peer", rt.lab.add_sandbox("peer"))
    assert rc == 0, peer
    peer_ip = peer["ips"][0]["address"].split("/")[0]
    # podman's world: a busybox root filesystem, plugin dir, network config, storage, all per run
    w = run_dir.path / "podman"
    rootfs, bin_dir, net_d = w / "rootfs", w / "cni-bin", w / "net.d"
    for d in (rootfs / "bin", bin_dir, net_d, *(rootfs / x for x in ("proc", "sys", "dev", "etc", "tmp"))):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox") or "", rootfs / "bin" / "busybox")
    for applet in ("sh", "ping", "ip"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (bin_dir / "netkit-cni").symlink_to(PLUGIN)
    (bin_dir / "host-local").symlink_to("/usr/lib/cni/host-local")
    mine = rt.conf("blue", "n1")
    conflist = {
        "cniVersion": "1.0.0",
        "name": "blue",
        "plugins": [{k: v for k, v in mine.items() if k not in ("cniVersion", "name")}],
    }
    (net_d / "blue.conflist").write_text(json.dumps(conflist))
    network = f'network_backend = "cni"\ncni_plugin_dirs = ["{bin_dir}"]\nnetwork_config_dir = "{net_d}"\n'
    (w / "containers.conf").write_text("[network]\n" + network)
    argv = ["nsenter", f"--net=/run/netns/{rt.lab.ns('n1')}", "podman", "--root", str(w / "storage")]
    argv += [
        "--runroot",
        str(w / "run"),
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
    ]
    argv += [
        "run",
        "--rm",
        "--ulimit",
        "nproc=1024:1024",
        "--ulimit",
        "nofile=1024:1024",
        "--network",
        "blue",
    ]
    argv += ["--rootfs", str(rootfs), "/bin/sh", "-c", f"ip -4 -o addr show eth0 && ping -c 2 -W 2 {peer_ip}"]
    try:
        done = subprocess.run(
            argv,
            env={**os.environ, "CONTAINERS_CONF": str(w / "containers.conf")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        subprocess.run(["umount", "-R", str(w / "run")], capture_output=True)  # whatever podman left mounted
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "10.99.0.1" in done.stdout and "mtu 1450" not in done.stderr and "2 packets received" in done.stdout
    ), done.stdout
    # podman's DEL after the container exited: nothing left on n1
    assert rt.pod_veths("n1") == [] and rt.allocated("n1") == [] and rt.records("n1") == []
