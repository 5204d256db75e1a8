"""The demo's verdict and report: one failed proof fails the demo and is named, in the terminal
summary and the HTML; the report has its figures, plots and the isolation matrix."""

from __future__ import annotations

import json
from pathlib import Path

from labs.demo.phases import DemoReport, Phase
from labs.demo.report import summary, write_report


def report(ok: bool) -> DemoReport:
    r = DemoReport(4, seconds=93.0)
    r.phases = [
        Phase(
            "reflectors", "BGP: mesh -> reflectors", True, 8.2, {"missing prefix-samples": 0}, at=(1.0, 9.0)
        ),
        Phase(
            "isolation",
            "isolation",
            ok,
            3.1,
            {"leaks": 0 if ok else 1},
            "" if ok else "LEAK blue-n1 -> red-n2",
        ),
    ]
    r.prefixes = [(0.5, {"n1": 3, "n2": 3}), (0.75, {"n1": 2, "n2": 3})]
    r.dns = {0: [40, 40, 0], 1: [40, 38, 2]}
    r.matrix = {"blue-n1": {"red-n2": not ok}, "red-n2": {"blue-n1": False}}
    r.expected = {"blue-n1": {"red-n2": False}, "red-n2": {"blue-n1": False}}
    r.shown = [("kubectl get netkit", "NAME  AGE")]
    return r


def test_a_failed_proof_fails_the_demo_and_is_named(tmp_path: Path) -> None:
    bad = report(ok=False)
    assert not bad.ok and report(ok=True).ok and not DemoReport(4).ok  # no phase run: not a pass
    text = summary(bad)
    assert (
        "FAILED" in text.splitlines()[0] and "FAILED isolation" in text and "LEAK blue-n1 -> red-n2" in text
    )
    index = write_report(bad, tmp_path)
    page = index.read_text()
    assert "FAILED" in page and "LEAK blue-n1 -&gt; red-n2" in page and "kubectl get netkit" in page
    assert (tmp_path / "prefixes.png").stat().st_size > 0 and (tmp_path / "dns.png").stat().st_size > 0
    assert page.count('style="background:#f99"') >= 2  # the phase and the leaking cell
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["ok"] is False and [p["name"] for p in data["phases"]] == ["reflectors", "isolation"]
