"""The image ``make image`` builds (scripts/build-image.sh, no base image pulled): inside its root
filesystem ``netkit --help`` runs and ``netkit dns serve`` answers a query (through a real NSD
upstream); the OCI layout names ``netkit`` as entrypoint; the Containerfile installs the same
Debian packages as the script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from labs.dnspeers import NsdServer
from labs.runid import RunDir, free_port
from netkit.base.process import ManagedProcess
from tests.conftest import hp
from tests.kubehelpers import ROOT, wait_for

pytestmark = [pytest.mark.root, pytest.mark.peers]


def script_packages() -> set[str]:
    text = (ROOT / "scripts" / "build-image.sh").read_text()
    match = re.search(r"^packages=(\S+)$", text, re.M)
    assert match
    return set(match.group(1).split(","))


def test_the_containerfile_installs_what_the_script_does() -> None:
    text = (ROOT / "Containerfile").read_text()
    final = text[text.rindex("\nFROM ") :]  # the image's stage (the first builds the CNI shim)
    match = re.search(r"--no-install-recommends ([a-z0-9. -]+?) \\?\n", final)
    assert match, text
    assert set(match.group(1).split()) == script_packages()


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    for tool in ("mmdebstrap", "umoci"):
        assert shutil.which(tool), f"{tool} is missing: make setup installs it"
    with RunDir() as rd:  # a few hundred MB: removed with the module, even on failure
        out = rd.path / "image"
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build-image.sh"), str(out)],
            capture_output=True,
            text=True,
            timeout=1200,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        yield out


def test_netkit_runs_in_the_image(image: Path) -> None:
    rootfs = image / "bundle" / "rootfs"
    done = subprocess.run(
        ["chroot", str(rootfs), "netkit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "netkit dns serve" in done.stdout, done.stdout + done.stderr
    # what the manifests and the agent run: the init container's shell and ip, the underlay
    # filter's nft, the speakers' tools
    # the node-side CNI shim runs (static): with no agent it says so, as the spec's error 11
    shim = subprocess.run(
        ["chroot", str(rootfs), "/opt/netkit/cni/netkit-cni"], capture_output=True, text=True
    )
    assert shim.returncode == 1 and json.loads(shim.stdout)["code"] == 11, shim.stdout + shim.stderr
    for tool in ("sh", "ip", "nft", "bird", "birdc", "vtysh"):
        found = subprocess.run(["chroot", str(rootfs), "sh", "-c", f"command -v {tool}"], capture_output=True)
        assert found.returncode == 0, f"{tool} is not in the image"
    index = json.loads((image / "oci" / "index.json").read_text())
    (manifest_ref,) = index["manifests"]
    blob = image / "oci" / "blobs" / "sha256"
    manifest = json.loads((blob / manifest_ref["digest"].split(":")[1]).read_text())
    cfg = json.loads((blob / manifest["config"]["digest"].split(":")[1]).read_text())
    assert (
        cfg["config"]["Entrypoint"] == ["netkit"]
        and manifest_ref["annotations"]["org.opencontainers.image.ref.name"]
    )


def test_the_image_answers_dns(image: Path, nsd: NsdServer, run_dir: RunDir) -> None:
    rootfs = image / "bundle" / "rootfs"
    port = free_port()
    argv = ["chroot", str(rootfs), "netkit", "dns", "serve", "--listen", f"127.0.0.1:{port}"]
    proc = ManagedProcess([*argv, "--upstream", hp(nsd)], run_dir.path / "dns.log")
    try:

        def answer() -> bool:
            try:
                q = dns.message.make_query("h1.example.test", "A")
                r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
            except (OSError, dns.exception.Timeout):
                return False
            return bool(r.answer)

        assert wait_for(answer, 30), (run_dir.path / "dns.log").read_text()[-2000:]
    finally:
        proc.stop()
