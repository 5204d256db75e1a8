"""Run one documented command line exactly as written, in a world where what it names exists.

``python -m tests.sandbox SPEC.json`` runs inside ``unshare --pid --mount --net --fork
--kill-child --mount-proc`` (see ``run_sandboxed``): a private PID namespace (every process the
command starts dies with it), a private mount namespace (``/run`` and ``/tmp`` are fresh, ``/etc``
is an overlay, so ``/etc/netkit/l2.yaml`` or ``/run/netkit/dns.ctl`` can be written exactly as a
document says, without touching this machine's) and a private network namespace (fixed names
such as ``node1``, ``pod-a``, ``169.254.20.10:53`` cannot collide with anything). It builds the
world the spec asks for, runs the command with ``bash -c`` (so ``"$NODE_NAME"`` expands) and
prints one JSON line: exit code, output, and for daemons whether they became ready.

Worlds:
  files   the example files in the working directory (networks.yaml, inventory.yaml, plan.yaml,
          reflector.yaml) and /etc/netkit/{l2,dns}.yaml; always there
  l2      this namespace is node n1 (VTEP 198.18.0.1 on eth1, pod-a on veth-pod-a), a namespace
          n2 (VTEP 198.18.0.2, pod-b 198.19.1.2 on blue, built by `netkit l2 apply`), and a
          namespace node1 that is another n1 (its own eth1 and veth-pod-a)
  dns     169.254.20.10, 10.96.0.10 and 10.96.0.11 on lo; NSD for example.test and cluster.local
          on 10.96.0.10:53, 10.96.0.11:53 and 127.0.0.1:5300; resolv.conf -> 10.96.0.11
  rr      198.18.0.1-4 on lo (the reflector example's addresses)
  bgp     four BIRD/FRR speakers in namespaces running the full mesh of inventory.yaml (the lab
          inventory), and speakers.yaml to reach them
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

NETWORKS = """\
networks:
  - name: blue
    vni: 100
    members: {n1: 198.18.0.1, n2: 198.18.0.2}
    ports: {n1: [veth-pod-a], n2: [veth-pod-b]}
  - name: red
    vni: 200
    members: {n1: 198.18.0.1, n2: 198.18.0.2}
"""


def run_sandboxed(spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    """Run ``spec`` in a fresh sandbox; ``workdir`` (a per-run temp dir) holds its files."""
    path = workdir / "spec.json"
    path.write_text(json.dumps({**spec, "dir": str(workdir)}))
    argv = [
        "unshare", "--pid", "--mount", "--net", "--fork", "--kill-child", "--mount-proc",
        sys.executable, "-m", "tests.sandbox", str(path),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired as exc:  # unshare --kill-child: the sandbox died with it
        return {"rc": None, "error": f"sandbox timed out after {timeout} s", "stderr": str(exc.stderr or "")}
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {
            "rc": None,
            "error": "no result from the sandbox",
            "stdout": proc.stdout,
            "stderr": proc.stderr,
        }
    result["sandbox_stderr"] = proc.stderr
    return result


# -- inside the sandbox ------------------------------------------------------------------------


def sh(*argv: str, netns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")


def ip(*args: str, netns: str | None = None) -> None:
    sh("ip", *(["-n", netns] if netns else []), *args)


def _code_paths() -> list[Path]:
    """The checkout and the Python environment the sandbox runs (the venv may live elsewhere)."""
    paths = [ROOT.resolve(), Path(sys.prefix).resolve()]
    return [p for i, p in enumerate(paths) if not any(q == p or q in p.parents for q in paths[:i])]


def mounts(base: Path) -> Path:
    """Fresh /run and /tmp, an overlay on /etc; returns the working directory."""
    sh("mount", "--make-rprivate", "/")
    keep = Path("/run/sandbox")
    sh("mount", "-t", "tmpfs", "tmpfs", "/run")
    keep.mkdir()
    sh("mount", "--bind", str(base), str(keep))
    for d in ("tmp", "work", "etc-upper", "etc-work"):
        (keep / d).mkdir(exist_ok=True)
    # the checkout and its venv stay where they are even when they live under /tmp (a CI clone)
    under_tmp = [p for p in _code_paths() if Path("/tmp") in p.parents]
    for i, path in enumerate(under_tmp):
        (keep / f"code-{i}").mkdir()
        sh("mount", "--bind", str(path), str(keep / f"code-{i}"))
    sh("mount", "--bind", str(keep / "tmp"), "/tmp")
    for i, path in enumerate(under_tmp):
        path.mkdir(parents=True, exist_ok=True)
        sh("mount", "--bind", str(keep / f"code-{i}"), str(path))
    upper, work = keep / "etc-upper", keep / "etc-work"
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/etc,upperdir={upper},workdir={work}", "/etc")
    Path("/run/netns").mkdir()
    ip("link", "set", "lo", "up")
    return keep / "work"


def files(work: Path) -> None:
    from bgp.reflector.core.config import EXAMPLE as REFLECTOR_EXAMPLE
    from netkit.cli.bgp import INVENTORY_EXAMPLE

    (work / "networks.yaml").write_text(NETWORKS)
    inventory = "\n".join(line[2:] for line in INVENTORY_EXAMPLE.splitlines()[1:]) + "\n"
    (work / "inventory.yaml").write_text(inventory)
    (work / "reflector.yaml").write_text(REFLECTOR_EXAMPLE)
    etc = Path("/etc/netkit")
    etc.mkdir(exist_ok=True)
    (etc / "l2.yaml").write_text(NETWORKS)
    import yaml

    configmap = yaml.safe_load((ROOT / "deploy/dnscache/configmap.yaml").read_text())
    (etc / "dns.yaml").write_text(configmap["data"]["dns.yaml"])
    netkit("bgp", "plan", "-f", "inventory.yaml", "--out", "plan.yaml", cwd=work)


def netkit(*args: str, cwd: Path, netns: str | None = None) -> None:
    cmd = [sys.executable, "-m", "netkit.cli", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"setup: netkit {' '.join(args)}: {res.stdout}{res.stderr}")


_pairs = 0


def pair(a: tuple[str | None, str], b: tuple[str | None, str]) -> None:
    """A veth pair with end ``a[1]`` in namespace ``a[0]`` and ``b[1]`` in ``b[0]`` (None: this
    one), both up; made under temporary names, so the same name may be used in two places."""
    global _pairs
    _pairs += 1
    tmp = {a: f"sbx{_pairs}a", b: f"sbx{_pairs}b"}
    ip("link", "add", tmp[a], "type", "veth", "peer", "name", tmp[b])
    for (ns, name), t in tmp.items():
        if ns:
            ip("link", "set", t, "netns", ns)
        ip("link", "set", t, "name", name, netns=ns)
        ip("link", "set", name, "up", netns=ns)


def world_l2(work: Path) -> None:
    for ns in ("n2", "pod-a", "pod-b", "node1", "pod-a1"):
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", netns=ns)
    pair((None, "eth1"), ("n2", "eth1"))
    ip("addr", "add", "198.18.0.1/24", "dev", "eth1")
    ip("addr", "add", "198.18.0.2/24", "dev", "eth1", netns="n2")
    for host, pod, port, addr, mac in (
        (None, "pod-a", "veth-pod-a", "198.19.1.1/24", "02:00:00:00:01:01"),
        ("n2", "pod-b", "veth-pod-b", "198.19.1.2/24", "02:00:00:00:01:02"),
        ("node1", "pod-a1", "veth-pod-a", "198.19.1.1/24", "02:00:00:00:01:01"),
    ):
        pair((host, port), (pod, "eth0"))
        ip("link", "set", "eth0", "address", mac, netns=pod)
        ip("addr", "add", addr, "dev", "eth0", netns=pod)
    pair(("node1", "eth1"), ("node1", "eth1-peer"))
    ip("addr", "add", "198.18.0.1/24", "dev", "eth1", netns="node1")
    netkit("l2", "apply", "-f", "networks.yaml", "--node", "n2", "--netns", "n2", cwd=work)


def world_dns(work: Path, stack: ExitStack) -> None:
    from labs.dnspeers import NsdServer, generate_zone

    for addr in ("169.254.20.10/32", "10.96.0.10/32", "10.96.0.11/32"):
        ip("addr", "add", addr, "dev", "lo")
    zones = [generate_zone("example.test", 20, seed=1), generate_zone("cluster.local", 20, seed=2)]
    for host, port in (("10.96.0.10", 53), ("10.96.0.11", 53), ("127.0.0.1", 5300)):
        d = work / f"nsd-{host}-{port}"
        d.mkdir()
        stack.enter_context(NsdServer(zones, workdir=d, listen=(host, port)))
    Path("/etc/resolv.conf").write_text("nameserver 10.96.0.11\n")


def world_rr() -> None:
    for i in range(1, 5):
        ip("addr", "add", f"198.18.0.{i}/32", "dev", "lo")


def world_bgp(work: Path, stack: ExitStack) -> None:
    import yaml

    from bgp.core.model import Timers
    from bgp.core.planner import mesh_plan, speakers_for
    from labs.bgpmigrate import lab_inventory, migration_lab, speaker_class
    from labs.bgpspeakers import BirdSpeaker
    from labs.runid import RunDir

    nodes = 4
    inv = lab_inventory(nodes)
    run = stack.enter_context(RunDir())  # under the sandbox's own /tmp
    lab = stack.enter_context(migration_lab(nodes, run))
    cfg = speakers_for(inv, mesh_plan(inv).sessions, {}, Timers.lab())
    entries: dict[str, Any] = {}
    speakers = {}
    for n in inv.names:
        sp = stack.enter_context(speaker_class(int(n[1:]))(lab.ns(n), run.path, cfg[n]))
        speakers[n] = sp
        if isinstance(sp, BirdSpeaker):
            entries[n] = {"kind": "bird", "control": str(sp.ctl_path), "config": str(sp.conf_path)}
        else:
            entries[n] = {"kind": "frr", "vty_socket": str(sp.dir)}
        entries[n]["netns"] = lab.ns(n)
    for sp in speakers.values():
        sp.wait_established(timeout=30)
    timers = {"hold": 9, "keepalive": 3, "connect_retry": 1}
    (work / "speakers.yaml").write_text(yaml.safe_dump({"timers": timers, "speakers": entries}))
    nodes_out = [
        {"name": n.name, "address": n.address, "alt_address": n.alt_address, "labels": dict(n.labels),
         "prefixes": list(n.prefixes)}
        for n in inv.nodes
    ]  # fmt: skip
    (work / "inventory.yaml").write_text(yaml.safe_dump({"asn": 64512, "nodes": nodes_out}))


def ready(probe: dict[str, Any], env: dict[str, str] | None = None) -> bool:
    kind = probe["kind"]
    try:
        if kind == "http":
            with urllib.request.urlopen(probe["url"], timeout=1) as resp:
                body = resp.read().decode()
            return resp.status == 200 and probe.get("contains", "") in body
        if kind == "dns":
            import dns.message
            import dns.query

            q = dns.message.make_query(probe.get("name", "h1.example.test"), "A")
            reply = dns.query.udp(q, probe["host"], port=probe.get("port", 53), timeout=1)
            return reply.rcode() == 0 and bool(reply.answer)
        if kind == "command":
            res = subprocess.run(["bash", "-c", probe["command"]], capture_output=True, env=env, check=False)
            return res.returncode == 0
    except Exception:  # any failure means: not yet
        return False
    raise ValueError(f"unknown readiness probe {kind!r}")


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result: dict[str, Any] = {"rc": None}
    with ExitStack() as stack:
        try:
            work = mounts(Path(spec["dir"]))
            os.chdir(work)
            files(work)
            needs = spec.get("needs", [])
            if "l2" in needs:
                world_l2(work)
            if "dns" in needs:
                world_dns(work, stack)
            if "rr" in needs:
                world_rr()
            if "bgp" in needs:
                world_bgp(work, stack)
            env = {**os.environ, "NODE_NAME": "n1"}
            venv_bin = str(Path(sys.executable).parent)
            env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
            for cmd in spec.get("setup", []):
                res = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"setup {cmd!r}: {res.stdout}{res.stderr}")
            for cmd in spec.get("background", []):
                proc = subprocess.Popen(["bash", "-c", cmd], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
                stack.callback(_stop, proc)
            if spec.get("background_ready") and not wait(spec["background_ready"], 20, env):
                raise RuntimeError("the background process did not become ready")
            result = execute(spec, work, env)
        except Exception as exc:  # reported to the test, which fails with it
            result["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))
    return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """A background process the example left running: SIGTERM, SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait(probe: dict[str, Any], timeout: float, env: dict[str, str]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(probe, env):
            return True
        time.sleep(0.1)
    return False


def execute(spec: dict[str, Any], work: Path, env: dict[str, str]) -> dict[str, Any]:
    out_path, err_path = work / "stdout", work / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(["bash", "-c", spec["command"]], cwd=work, env=env, stdout=out, stderr=err)
        became_ready = None
        if spec.get("ready"):
            became_ready = False
            deadline = time.monotonic() + spec.get("ready_timeout", 20)
            while time.monotonic() < deadline and proc.poll() is None:
                if ready(spec["ready"], env):
                    became_ready = True
                    break
                time.sleep(0.1)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(spec.get("timeout", 120))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    return {
        "rc": rc,
        "ready": became_ready,
        "stdout": out_path.read_text()[-20000:],
        "stderr": err_path.read_text()[-20000:],
        "files": sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())[:200],
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
