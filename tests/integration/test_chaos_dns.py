"""``netkit chaos dns``, short: the whole fault schedule compressed into 60 s at 100 QPS against
netkit, Unbound and dnsmasq in namespaces. Asserts the harness, not the systems: every window is
there and populated, the counts add up, the faults were really applied, failures are detected,
the outputs exist, and nothing is left behind. (Availability targets are measured by the long
run, never asserted here.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labs.chaos.schedule import FAULTS

pytestmark = [pytest.mark.peers, pytest.mark.root]

DURATION = 60
QPS = 100
SYSTEMS = ("netkit", "unbound", "dnsmasq")


def chaos(*args: str) -> list[str]:
    return [sys.executable, "-m", "netkit.cli", "chaos", "dns", *args]


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state not in ("Z", "X"):
            found.append((int(entry), cmd))
    return found


@dataclass
class Run:
    out: Path
    proc: subprocess.CompletedProcess[str]
    results: dict[str, Any]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if os.geteuid() != 0:
        pytest.fail("netkit chaos dns needs root (network namespaces); the suite runs as root")
    out = tmp_path_factory.mktemp("chaos") / "out"
    proc = subprocess.run(
        chaos("--duration", str(DURATION), "--qps", str(QPS), "--seed", "3", "--out", str(out),
              "--progress-every", "10"),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    results_file = out / "results.json"
    assert results_file.exists(), proc.stdout + proc.stderr
    yield Run(out, proc, json.loads(results_file.read_text()))


@pytest.mark.timeout(400)
def test_run_completes_and_self_checks_pass(short_run: Run) -> None:
    assert short_run.proc.returncode == 0, short_run.proc.stdout + short_run.proc.stderr[-4000:]
    assert short_run.results["harness_problems"] == []
    assert "HEADLINE" in short_run.proc.stdout
    assert "harness self-checks: passed" in short_run.proc.stdout
    # progress was shown while it ran
    assert short_run.proc.stderr.count(f"/{DURATION} s]") >= 4


def test_every_fault_window_is_present_and_populated(short_run: Run) -> None:
    r = short_run.results
    kinds = [w["kind"] for w in r["schedule"]]
    assert set(kinds) == set(FAULTS), kinds
    for kind in FAULTS:
        if kind != "baseline":
            assert kinds.count(kind) == 1
    labels = [w["label"] for w in r["schedule"]]
    assert r["schedule"][0]["start"] == 0 and r["schedule"][-1]["end"] == pytest.approx(DURATION)
    for s in SYSTEMS:
        ws = r["systems"][s]["windows"]
        assert [w["label"] for w in ws] == labels
        for w in ws:
            assert w["queries"] > 0, (s, w["label"])
            assert 0.0 <= w["availability"] <= 1.0
            assert w["failures"] == sum(w["failures_by_reason"].values())
            assert sum(c["queries"] for c in w["by_class"].values()) == w["queries"]


def test_query_counts_match_rate_times_duration(short_run: Run) -> None:
    r = short_run.results
    expected = DURATION * QPS
    digests = set()
    for s in SYSTEMS:
        sysr = r["systems"][s]
        assert sysr["overall"]["queries"] == expected
        assert sum(w["queries"] for w in sysr["windows"]) == expected
        assert sysr["not_sent"] == 0
        g = sysr["generator"]
        assert g["achieved_qps"] == pytest.approx(QPS, rel=0.02)
        assert g["lateness_p99_ms"] < 50, g  # the generator kept its schedule
        digests.add(g["stream_digest"])
        # latency percentiles and availability are computed for every system
        hd = sysr["headline"]
        assert 0.0 < hd["availability"] <= 1.0
        assert hd["p50_ms"] is not None and hd["p50_ms"] <= hd["p99_ms"] <= hd["p999_ms"]
    assert digests == {r["run"]["stream_sha256"]}  # the same query stream everywhere


def test_all_down_cold_names_are_reported_separately_and_fail(short_run: Run) -> None:
    r = short_run.results
    for s in SYSTEMS:
        sysr = r["systems"][s]
        adc = sysr["all_down_cold"]
        assert adc["queries"] > 0
        assert sysr["headline"]["queries"] + adc["queries"] == sysr["overall"]["queries"]
        # the detector: nothing can answer a never-seen name while every upstream is black-holed,
        # so a harness that scores these as answered is broken (checked here for every system)
        strict = sysr["all_down_cold_strict"]
        assert strict["queries"] > 0
        assert strict["failures"] == strict["queries"], (s, strict)
        down = next(w for w in sysr["windows"] if w["kind"] == "all_down")
        assert down["failures"] >= strict["failures"]
        seen, unseen = sysr["all_down_seen_before"], sysr["all_down_never_answered_before"]
        assert seen["queries"] + unseen["queries"] == down["queries"]


def test_faults_were_really_applied(short_run: Run) -> None:
    r = short_run.results
    applied = r["faults_applied"]
    actions = {f["action"] for f in applied}
    for w in r["schedule"]:
        if w["kind"] == "baseline":
            continue
        assert f"start {w['label']}" in actions
        assert f"end {w['label']}" in actions
    for f in applied:
        assert "error" not in f, f
        assert f["lag_ms"] < 50, f
    by_kind = {w["kind"]: w for w in r["schedule"]}
    proxies = r["proxies"]
    assert proxies[by_kind["servfail"]["target"]]["servfail_sent"] > 0
    assert proxies[by_kind["garbage"]["target"]]["garbage_sent"] > 0
    assert proxies[by_kind["loss"]["target"]]["udp_dropped_queries"] > 0
    assert proxies[by_kind["delay"]["target"]]["delayed"] > 0
    assert all(p["blackholed"] > 0 for p in proxies.values())  # all_down
    kill = next(f for f in applied if f["action"].startswith("start kill"))
    assert kill["result"]["sigkill_pid"] > 0
    assert all(p["udp_dropped_replies"] > 0 for p in proxies.values())  # loss_all
    restarts = {s: r["systems"][s]["restart"] for s in SYSTEMS}
    assert "handover" in restarts["netkit"]["cache_restart"]["method"]
    assert "takeover" in restarts["netkit"]["upgrade"]["method"]
    assert "SO_REUSEPORT" in restarts["unbound"]["upgrade"]["method"]
    assert "SIGTERM" in restarts["dnsmasq"]["upgrade"]["method"]
    for s in SYSTEMS:
        for how in ("cache_restart", "upgrade", "crash_restart"):
            assert "error" not in restarts[s][how], (s, how, restarts[s][how])
            pids = ("old_worker", "new_worker") if s == "netkit" else ("old_pid", "new_pid")
            assert restarts[s][how][pids[0]] != restarts[s][how][pids[1]], (s, how, restarts[s][how])
        assert "SIGKILL" in restarts[s]["crash_restart"]["method"]
    # netkit's metrics were read at every window boundary
    assert len(r["netkit_metrics_by_window"]) == len(r["schedule"])


def test_outputs_exist_and_the_report_shows_the_plots(short_run: Run) -> None:
    out = short_run.out
    html = (out / "report.html").read_text()
    for png in ("availability.png", "latency.png", "windows.png"):
        path = out / png
        assert path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{png}'" in html
    for s in SYSTEMS:
        assert (out / "records" / f"{s}.bin").stat().st_size > DURATION * QPS * 10
        assert s in html
    assert any(p.name.startswith("netkit") for p in (out / "logs").iterdir())


def test_nothing_is_left_behind(short_run: Run) -> None:
    rid = short_run.results["run"]["run_id"]
    assert rid.startswith("nk") and len(rid) == 6
    assert [n for n in namespaces() if n.startswith(rid)] == []
    assert processes_mentioning(rid) == []
    cleanup = json.loads((short_run.out / "cleanup.json").read_text())
    assert cleanup == {"run_id": rid, "problems": [], "leftover_pids": [], "interrupted": None}
    assert not list(Path("/tmp").glob(f"{rid}-*"))  # the per-run dir


@pytest.mark.timeout(120)
def test_sigterm_mid_run_cleans_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("netkit chaos dns needs root")
    proc = subprocess.Popen(
        chaos("--duration", "60", "--qps", "50", "--out", str(tmp_path / "out"), "--progress-every", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    rid = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("[") and "run nk" in line and rid is None:
            rid = line.split("run ", 1)[1][:6]
        if "/60 s]" in line:  # the load is running: lab, caches and generators are up
            break
    assert rid is not None
    assert [n for n in namespaces() if n.startswith(rid)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert [n for n in namespaces() if n.startswith(rid)] == []  # others may run tests meanwhile
    assert processes_mentioning(rid) == []
    cleanup = json.loads((tmp_path / "out" / "cleanup.json").read_text())
    assert cleanup["problems"] == [] and cleanup["leftover_pids"] == []
    assert cleanup["interrupted"] == "signal SIGTERM"
