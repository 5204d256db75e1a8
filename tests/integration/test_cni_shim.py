"""The node-side ``netkit-cni`` (a static C shim, ``netkit/cni/shim.c``) hands each call to the
node agent's CNI server, which runs the plugin with the node's network: invoked exactly as a
runtime invokes a plugin, it gives what the plugin gives when run directly (the result shape,
CHECK, DEL twice, the spec's errors with the plugin's codes), and calls made at once are all
served; with no agent answering it prints the spec's error 11 (try again later)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from labs.runid import RunDir
from netkit.cni.server import CniServer
from tests.cnihelpers import Runtime, build_shim, cni_lab

pytestmark = [pytest.mark.root, pytest.mark.peers]


@pytest.fixture
def runtime(run_dir: RunDir) -> Iterator[Runtime]:
    with cni_lab(run_dir) as rt:
        yield rt


def test_the_shim_gives_what_the_plugin_gives(runtime: Runtime, run_dir: RunDir) -> None:
    rt = runtime
    shim = build_shim(run_dir.path)
    sock = str(run_dir.path / "cni.sock")
    env = {"NETKIT_CNI_SOCKET": sock}
    server = CniServer(sock, rt.lab.ns("n1")).start()
    try:
        box = rt.lab.add_sandbox("s1")
        rc, out = rt.call("n1", "ADD", rt.conf("blue", "n1"), "c-shim", box, plugin=shim, env=env)
        assert rc == 0 and out["ips"][0]["address"] == "10.99.0.10/24", out
        assert out["interfaces"][2] == {**out["interfaces"][2], "name": "eth0", "sandbox": box}
        assert len(rt.pod_veths("n1")) == 1 and rt.records("n1") == ["c-shim-eth0.json"]
        conf = {**rt.conf("blue", "n1"), "prevResult": out}
        assert rt.call("n1", "CHECK", conf, "c-shim", box, plugin=shim, env=env)[0] == 0
        # the plugin's errors come through as they are
        rc, err = rt.call("n1", "ADD", rt.conf("green", "n1"), "c-bad", box, plugin=shim, env=env)
        assert rc == 1 and err["code"] == 11 and "no bridge" in err["msg"], err
        rc, err = rt.call(
            "n1", "ADD", {**rt.conf("blue", "n1"), "colour": 1}, "c-bad", box, plugin=shim, env=env
        )
        assert rc == 1 and err["code"] == 2, err
        for _ in range(2):
            assert rt.call("n1", "DEL", conf, "c-shim", box, plugin=shim, env=env)[0] == 0
        assert rt.pod_veths("n1") == [] and rt.allocated("n1") == [] and rt.records("n1") == []
        # pods started at once: every call served
        boxes = [rt.lab.add_sandbox(f"p{i}") for i in range(6)]
        results: dict[int, tuple[int, object]] = {}

        def add(i: int) -> None:
            results[i] = rt.call("n1", "ADD", rt.conf("blue", "n1"), f"c{i}", boxes[i], plugin=shim, env=env)

        threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(rc for rc, _ in results.values()) == [0] * 6, results
        assert len(rt.pod_veths("n1")) == 6 and len(set(rt.allocated("n1"))) == 6
        assert server.served >= 11
        # a successor on the same path (a DaemonSet surge) keeps it when the old one stops
        successor = CniServer(sock, rt.lab.ns("n1")).start()
        server.stop()
        rc, _ = rt.call(
            "n1", "ADD", rt.conf("blue", "n1"), "c-after", rt.lab.add_sandbox("after"), plugin=shim, env=env
        )
        assert rc == 0 and successor.served == 1
        successor.stop()
    finally:
        server.stop()
    rc, err = rt.call(
        "n1", "ADD", rt.conf("blue", "n1"), "c-late", rt.lab.add_sandbox("late"), plugin=shim, env=env
    )
    assert rc == 1 and err["code"] == 11 and "does not answer" in err["msg"] and err["details"] == sock, err
