"""Every documented command line runs: the Examples of every command's --help and the command
lines of README.md, docs/ and deploy/README.md (collected by ``tests.docexamples``).

Each example runs exactly as written, with ``bash -c``, in a sandbox of its own
(``tests.sandbox``: private PID, mount and network namespaces) holding the world it names: the
files (networks.yaml, inventory.yaml, /etc/netkit/dns.yaml ...), node and pod namespaces, real
upstreams, running BGP speakers. One-shot commands must exit as listed; long-running ones must
become ready (answer DNS, serve /metrics or /healthz, converge the kernel) and exit 0 on SIGTERM.
An example with no entry below fails the test: a new example must say how it is run.

Synopses (``[--netns NS]``, ``FILE``) are not run; every flag they show must exist. References
(``netkit dns serve``) must name a real command.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labs.runid import RunDir
from netkit.cli import build_parser
from tests.docexamples import ROOT, Documented, documented
from tests.sandbox import run_sandboxed

pytestmark = [pytest.mark.root, pytest.mark.peers]

ALL = documented()
PARSER = build_parser()


@dataclass(frozen=True)
class Run:
    """How an example runs: the worlds it needs, setup commands, and what must happen."""

    needs: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    background: tuple[str, ...] = ()  # started before the example, e.g. the server it talks to
    background_ready: dict[str, Any] | None = None
    ready: dict[str, Any] | None = None  # a daemon: becomes ready, then SIGTERM, exit 0
    rc: int = 0
    out: tuple[str, ...] = ()  # must appear on stdout
    append: str = ""  # appended to the command (only --check, with the reason in `why`)
    why: str = ""
    timeout: float = 60
    extra: dict[str, Any] = field(default_factory=dict)


def http(url: str, contains: str = "") -> dict[str, Any]:
    return {"kind": "http", "url": url, "contains": contains}


def dns(host: str, port: int = 53, name: str = "h1.example.test") -> dict[str, Any]:
    return {"kind": "dns", "host": host, "port": port, "name": name}


def command(cmd: str) -> dict[str, Any]:
    return {"kind": "command", "command": cmd}


L2_N1_APPLIED = ("netkit l2 apply -f networks.yaml --node n1",)
NODE1_APPLIED = ("netkit l2 apply -f networks.yaml --node n1 --netns node1",)
NODE1_OK = command("netkit l2 status -f networks.yaml --node n1 --netns node1")
CHAOS_CHECK = "the runs take 60-600 s: validated with --check (the 60 s schedule runs in test_chaos_dns.py)"

RUNS: dict[str, Run] = {
    # -- DNS --------------------------------------------------------------------------------
    "netkit dns serve --listen 127.0.0.1:5353 --upstream 127.0.0.1:5300 --metrics 127.0.0.1:9253": Run(
        needs=("dns",), ready=dns("127.0.0.1", 5353)
    ),
    "netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10 --workers 2": Run(
        needs=("dns",), ready=dns("169.254.20.10", name="h1.cluster.local")
    ),
    "netkit dns serve -f /etc/netkit/dns.yaml --check": Run(needs=("dns",), out=("listen:", "10.96.0.11:53")),
    "netkit dns serve --config dns.yaml --check": Run(
        setup=("cp /etc/netkit/dns.yaml dns.yaml",), out=("169.254.20.10:53",)
    ),
    "netkit dns restart --control /run/netkit/dns.ctl": Run(
        needs=("dns",),
        background=(
            "mkdir -p /run/netkit && netkit dns serve --listen 127.0.0.1:53 --upstream 127.0.0.1:5300"
            " --control /run/netkit/dns.ctl",
        ),
        background_ready=dns("127.0.0.1"),
        out=('"new_pid"',),
    ),
    "netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10 "
    "--metrics 169.254.20.10:9253": Run(needs=("dns",), ready=http("http://169.254.20.10:9253/readyz")),
    "netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10 "
    "--zone in-addr.arpa=10.96.0.10 --metrics 169.254.20.10:9253": Run(
        needs=("dns",), ready=dns("169.254.20.10", name="h2.cluster.local")
    ),
    "netkit dns demo": Run(out=("40/40 fresh names resolved with one upstream dead",), timeout=120),
    # -- L2 -----------------------------------------------------------------------------------
    "netkit l2 apply -f networks.yaml --node n1 --dry-run": Run(
        needs=("l2",), out=("Dry run: nothing applied",)
    ),
    "netkit l2 apply -f networks.yaml --node n1 --netns node1": Run(needs=("l2",), out=("Applied",)),
    "netkit l2 apply -f networks.yaml --node n1 --netns node1 --dry-run": Run(needs=("l2",)),
    "netkit l2 apply -f networks.yaml --node n1 --probe pod-a/198.19.1.2 --rollback-timeout 10": Run(
        needs=("l2",), out=("Probes passed: 1.",)
    ),
    "netkit l2 status -f networks.yaml --node n1": Run(
        needs=("l2",), setup=L2_N1_APPLIED, out=("blue", "ok")
    ),
    "netkit l2 status -f networks.yaml --node n1 --netns node1": Run(needs=("l2",), setup=NODE1_APPLIED),
    "netkit l2 status -f networks.yaml --node n1 --netns node1 -o json": Run(
        needs=("l2",), setup=NODE1_APPLIED, out=('"status": "ok"',)
    ),
    'netkit l2 agent -f /etc/netkit/l2.yaml --node "$NODE_NAME" --metrics 0.0.0.0:9254': Run(
        needs=("l2",), ready=http("http://127.0.0.1:9254/metrics", 'netkit_l2_networks{status="ok"} 2.0')
    ),
    "netkit l2 agent -f /etc/netkit/l2.yaml --metrics 0.0.0.0:9254": Run(
        needs=("l2",), ready=http("http://127.0.0.1:9254/metrics", 'netkit_l2_networks{status="ok"} 2.0')
    ),
    "netkit l2 agent -f networks.yaml --node n1 --netns node1 --resync 10 --log-format text": Run(
        needs=("l2",), ready=NODE1_OK
    ),
    "netkit l2 agent -f networks.yaml --node n1 --check": Run(out=("vtep: 198.18.0.1",)),
    "netkit l2 verify": Run(out=("vxlan:", "PASS")),
    "netkit l2 verify --kind vxlan": Run(out=("0 leaks, 0 misses",)),
    "netkit l2 verify --kind vxlan -o json": Run(out=('"ok": true',)),
    # -- doctor -------------------------------------------------------------------------------
    "netkit doctor --node n1 --networks networks.yaml --dns 169.254.20.10:53": Run(
        needs=("l2", "dns"),
        setup=L2_N1_APPLIED,
        background=("netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10",),
        background_ready=dns("169.254.20.10", name="h1.cluster.local"),
        out=("l2-drift", "dns-answering", "AsExpected"),
    ),
    "netkit doctor --node n1 --networks networks.yaml --fix -o json": Run(
        needs=("l2",), out=('"found": "problem"', '"applied": true', '"status": "ok"')
    ),
    "netkit doctor --dns 169.254.20.10:53 --dns-metrics 169.254.20.10:9253 --dns-interface lo": Run(
        needs=("dns",),
        background=(
            "netkit dns serve --listen 169.254.20.10:53 --zone cluster.local=10.96.0.10"
            " --metrics 169.254.20.10:9253",
        ),
        background_ready=http("http://169.254.20.10:9253/readyz"),
        out=("dns-upstreams", "dns-address"),
    ),
    "netkit doctor --only conntrack --conntrack-threshold 0.8 -o json": Run(out=('"check": "conntrack"',)),
    # -- BGP ----------------------------------------------------------------------------------
    "netkit bgp plan -f inventory.yaml --out plan.yaml": Run(out=("reflectors for 3 nodes",)),
    "netkit bgp plan -f inventory.yaml --current plan.yaml": Run(out=("0 sessions added, 0 removed",)),
    "netkit bgp plan -f inventory.yaml -o json": Run(out=('"kind": "rr"',)),
    "netkit bgp render -f inventory.yaml --to bird --out bird/": Run(out=("wrote 3 files to bird",)),
    "netkit bgp render -f inventory.yaml --plan plan.yaml --to calico": Run(out=("kind: BGPPeer",)),
    "netkit bgp render -f inventory.yaml --to frr --node node-a": Run(out=("router bgp 64512",)),
    "netkit bgp render -f inventory.yaml --to exabgp": Run(out=("router_id:",)),
    "netkit bgp migrate -f inventory.yaml --dry-run": Run(out=("steps from mesh to rr",)),
    "netkit bgp migrate -f inventory.yaml --current plan.yaml --to mesh --dry-run": Run(out=("steps from",)),
    "netkit bgp migrate -f inventory.yaml --speakers speakers.yaml --out plan.yaml": Run(
        needs=("bgp",), out=("the plan now in force is in plan.yaml",), timeout=180
    ),
    "netkit bgp reflector -f reflector.yaml --check": Run(out=("neighbor 198.18.0.1 {",)),
    "python -m bgp.reflector -f reflector.yaml --check": Run(out=("neighbor 198.18.0.1 {",)),
    "netkit bgp reflector -f reflector.yaml --state-dir /run/netkit/rr --log-format text": Run(
        needs=("rr",), ready=http("http://198.18.0.2:9179/healthz")
    ),
    # -- lab ----------------------------------------------------------------------------------------
    "netkit lab apiserver --listen 127.0.0.1:8080 --data-dir /tmp/netkit-api": Run(
        ready=command("kubectl --server http://127.0.0.1:8080 get namespaces kube-system")
    ),
    "netkit lab apiserver --check": Run(out=("listen: 127.0.0.1:8080",)),
    "netkit lab demo --check": Run(out=("nodes: 6",)),
    "netkit lab shell n1 --lab demo-report/lab.json": Run(rc=1),  # no lab running here: said, exit 1
    "netkit lab demo --nodes 6 --out demo-report": Run(
        append=" --check",
        why="a full run takes ~3 min: test_lab_demo.py runs the demo (4 nodes) with more checks",
        out=("out: demo-report",),
    ),
    "netkit lab demo --nodes 8 --keep": Run(
        append=" --check", why="it stays up until Ctrl-C", out=("keep: true",)
    ),
    "netkit controller --check": Run(out=("lease: netkit-controller",)),
    "netkit agent --node n1 --netns lab-n1 --state-dir /tmp/n1 --check": Run(out=("node: n1",)),
    # -- chaos ------------------------------------------------------------------------------------
    "netkit chaos dns --duration 600 --qps 2000 --seed 1 --out /tmp/chaos-long": Run(
        append=" --check", why=CHAOS_CHECK, out=("kind: all_down",)
    ),
    "netkit chaos dns --duration 60 --qps 100 --systems netkit,unbound --out /tmp/chaos-short": Run(
        append=" --check", why=CHAOS_CHECK, out=("- unbound",)
    ),
    "netkit chaos dns --duration 600 --qps 2000": Run(append=" --check", why=CHAOS_CHECK),
    "netkit chaos dns --duration 120 --check": Run(out=("schedule:",)),
}

# Examples another test runs exactly as written, with more checks than a run here would make.
COVERED: dict[str, str] = {
    "netkit controller --kubeconfig /tmp/netkit-api/kubeconfig --metrics 127.0.0.1:9260": (
        "tests/integration/test_control_process.py::test_two_replicas_one_leader_and_a_takeover"
    ),
    "netkit agent --node n1 --kubeconfig /tmp/netkit-api/kubeconfig --metrics 127.0.0.1:9261": (
        "tests/integration/test_control_e2e.py::test_l2_dns_leader_and_api_outage_end_to_end"
    ),
    "netkit bgp migrate --lab": "tests/integration/test_bgp_migration_lab.py::"
    "test_mesh_to_reflectors_and_back_loses_no_prefix_at_any_sample",
    "python -m labs.uml -- netkit l2 verify --kind vlan": "tests/integration/test_l2_vlan_uml.py::"
    "test_verify_vlan",
}

EXAMPLES = sorted({d.text.split("  #")[0].strip(): d for d in ALL if d.kind == "example"}.items())


def test_every_example_says_how_it_runs() -> None:
    missing = [f"{d.where}: {text}" for text, d in EXAMPLES if text not in RUNS and text not in COVERED]
    assert not missing, "examples without an entry in RUNS or COVERED:\n" + "\n".join(missing)
    stale = sorted((set(RUNS) | set(COVERED)) - {text for text, _ in EXAMPLES})
    assert not stale, f"entries for examples no document has any more: {stale}"
    for run in RUNS.values():
        assert not run.append or (run.append == " --check" and run.why)


def test_covered_examples_name_a_test_that_exists() -> None:
    for text, node in COVERED.items():
        path, _, name = node.partition("::")
        source = (ROOT / path).read_text()
        assert f"def {name}(" in source, f"{text}: {node} does not exist"


@pytest.mark.parametrize(
    ("text", "doc"), [(t, d) for t, d in EXAMPLES if t in RUNS], ids=[t for t, _ in EXAMPLES if t in RUNS]
)
def test_example_runs(text: str, doc: Documented) -> None:
    run = RUNS[text]
    spec = {
        "command": text + run.append,
        "needs": list(run.needs),
        "setup": list(run.setup),
        "background": list(run.background),
        "background_ready": run.background_ready,
        "ready": run.ready,
        "timeout": run.timeout,
    }
    with RunDir() as rd:
        result = run_sandboxed(spec, rd.path, timeout=run.timeout + 90)
    shown = json.dumps({k: v for k, v in result.items() if k != "files"}, indent=1)[-6000:]
    assert "error" not in result, f"{doc.where}: {shown}"
    if run.ready is not None:
        assert result["ready"], f"{doc.where}: never became ready: {shown}"
    assert result["rc"] == run.rc, f"{doc.where}: exit {result['rc']}, expected {run.rc}: {shown}"
    for needle in run.out:
        assert needle in result["stdout"], f"{doc.where}: {needle!r} not in the output: {shown}"
    assert "Traceback" not in result["stderr"], shown


def _leaf_of(words: list[str]) -> Any:
    """The deepest command ``words`` name (the top-level parser if none)."""
    node = PARSER
    for w in words:
        sub = [a for a in node._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not sub or w not in sub[0].choices:
            break
        node = sub[0].choices[w]
    return node


@pytest.mark.parametrize("doc", [d for d in ALL if d.kind == "synopsis"], ids=lambda d: d.where)
def test_synopses_show_real_flags(doc: Documented) -> None:
    words = doc.words
    if words[:3] == ["python", "-m", "labs.uml"]:
        from labs.uml import main as uml_main

        with pytest.raises(SystemExit) as info:
            uml_main(["--help"])
        assert info.value.code == 0
        return
    leaf = _leaf_of(words[1:])
    assert leaf.get_default("_info") is not None, f"{doc.where}: {doc.text!r} names no command"
    known = {s for a in leaf._actions for s in a.option_strings}
    flags = {w.strip("[]").split("=")[0] for w in doc.text.split() if w.strip("[").startswith("-")}
    flags = {f.rstrip(".]…") for f in flags if f not in ("-", "--")}
    assert flags <= known, f"{doc.where}: {sorted(flags - known)} are not flags of {leaf.prog}"


@pytest.mark.parametrize("doc", [d for d in ALL if d.kind == "reference"], ids=lambda d: d.where)
def test_references_name_real_commands(doc: Documented, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(doc.text.split("(")[0])
    groups = [w.split("/") for w in words[1:] if not w.startswith("-")]
    paths = [[]]
    for alternatives in groups:
        paths = [[*p, a] for p in paths for a in alternatives]
    for path in paths:
        node = _leaf_of(path)
        assert node.prog == " ".join(["netkit", *path]), f"{doc.where}: no command {' '.join(path)!r}"
    if "--help" in words:
        from netkit.cli import main

        with pytest.raises(SystemExit) as info:
            main([*words[1:]])
        assert info.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {' '.join(words[:-1])}")


def test_sandboxes_leave_nothing_on_this_machine() -> None:
    names = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not names & {"node1", "n2", "pod-a", "pod-b", "pod-a1"}
    assert not Path("/etc/netkit").exists() and not Path("/run/netkit/dns.ctl").exists()
