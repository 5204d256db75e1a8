"""deploy/monitoring/: the SLO rules of the node-local DNS cache under the real promtool (syntax
and the unit tests in tests/promtool/), the burn-rate alerts as the SRE workbook has them, the
generated PrometheusRule and Grafana dashboard up to date with the rules file, and every query
naming only metrics netkit exports (docs/dns.md) or rules that record them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labs import monitoring

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "netkit-dns.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards" / "netkit-dns.json"
GENERATE = MONITORING / "generate.py"  # runs labs.monitoring
PROMTOOL_TESTS = ROOT / "tests" / "promtool" / "netkit-dns.test.yaml"
DOCS = ROOT / "docs" / "dns.md"

OBJECTIVE = "0.99999"
# SRE workbook, "Alerting on SLOs", multiwindow multi-burn-rate: (long, short, burn factor, for,
# severity); the first two page, the last two open a ticket
BURN_ALERTS = {
    ("1h", "5m", "14.4", "2m", "critical"),
    ("6h", "30m", "6", "15m", "critical"),
    ("1d", "2h", "3", "1h", "warning"),
    ("3d", "6h", "1", "3h", "warning"),
}
RAW_WINDOWS = ("5m", "30m", "1h", "2h", "6h")  # rate() of the counters
AVERAGED_WINDOWS = ("1d", "3d", "30d")  # averages of the recorded rates
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")

Json = dict[str, Any]


# -- helpers --------------------------------------------------------------------------------------
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed; `make setup` installs it (Debian package `prometheus`, "
            "see scripts/bootstrap.sh)"
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def rules() -> list[Json]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def recording(name: str) -> Json:
    (rule,) = [r for r in rules() if r.get("record") == name]
    return rule


def alerts(name: str) -> list[Json]:
    return [r for r in rules() if r.get("alert") == name]


def exported_metrics() -> set[str]:
    """The series names netkit exports, from the metrics table of docs/dns.md."""
    table = re.findall(r"^\| `(netkit_dns_\w+)` \| (counter|gauge|histogram) \|", DOCS.read_text(), re.M)
    assert len(table) >= 15, "the metrics table of docs/dns.md was not found"
    names = set()
    for name, kind in table:
        names |= {f"{name}{s}" for s in ("_bucket", "_count", "_sum")} if kind == "histogram" else {name}
    return names


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def names_in(promql: str) -> set[str]:
    """Metric and recording-rule names in an expression (label values and strings removed)."""
    return {n for n in NAME.findall(re.sub(r'"[^"]*"', "", promql)) if "netkit_dns" in n}


def dashboard() -> Json:
    board: Json = json.loads(DASHBOARD.read_text())
    return board


def panels(board: Json) -> Iterator[Json]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows hold their panels


def dashboard_queries(board: Json) -> Iterator[tuple[str, str]]:
    """(where, text) of every query: panel targets and template variables."""
    for p in panels(board):
        for t in p.get("targets", []):
            yield f"panel {p['id']} ({p['title']}) {t['refId']}", t["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            yield f"variable {var['name']}", var["definition"]
            yield f"variable {var['name']}", var["query"]["query"]


# -- the real promtool ----------------------------------------------------------------------------
def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout
    assert f"{len(rules())} rules found" in proc.stdout


def test_promtool_unit_tests() -> None:
    """Healthy node, fast burn (page after `for:`, tickets not yet), a burst that resets, dropped
    queries, upstreams down, serve-stale and latency: tests/promtool/netkit-dns.test.yaml."""
    proc = run_promtool("test", "rules", str(PROMTOOL_TESTS.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query, Grafana variables filled in, parses as a recording rule."""
    board = dashboard()
    rule_list = [
        {
            "record": f"dashboard_query_{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".+"),
        }
        for i, (_, expr) in enumerate(q for q in dashboard_queries(board) if not q[0].startswith("variable"))
    ]
    assert len(rule_list) >= 20
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rule_list}]}))
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the rules ------------------------------------------------------------------------------------
def test_burn_rate_alerts_follow_the_workbook() -> None:
    burn = alerts("NetkitDnsErrorBudgetBurn")
    table = set()
    for rule in burn:
        labels = rule["labels"]
        long, short = labels["long_window"], labels["short_window"]
        objective = re.escape(OBJECTIVE)
        m = re.fullmatch(
            rf"netkit_dns:sli_error_ratio:rate{long} > \((?P<f>[0-9.]+) \* \(1 - {objective}\)\)\s+"
            rf"and\s+netkit_dns:sli_error_ratio:rate{short} > \((?P=f) \* \(1 - {objective}\)\)",
            rule["expr"].strip(),
        )
        assert m, f"{long}/{short}: {rule['expr']!r} is not `long > F * (1 - O) and short > F * (1 - O)`"
        table.add((long, short, m["f"], rule["for"], labels["severity"]))
    assert table == BURN_ALERTS
    assert len(burn) == len(BURN_ALERTS)
    # 14.4x of a 1e-5 budget is an error ratio of 1.44e-4
    assert 14.4 * (1 - float(OBJECTIVE)) == pytest.approx(1.44e-4)


def test_thresholds_are_expressions_of_the_objective() -> None:
    """No magic numbers: besides the windows in rule names, the only numbers in the burn and
    latency alerts are `FACTOR * (1 - OBJECTIVE)`."""
    for rule in alerts("NetkitDnsErrorBudgetBurn") + alerts("NetkitDnsHighLatency"):
        rest = re.sub(r"\([0-9.]+ \* \(1 - 0\.[0-9]+\)\)", "", rule["expr"])
        rest = NAME.sub("", rest).replace("(1 - ", "(")  # `1 - good ratio` is the bad ratio
        assert not re.search(r"[0-9]", rest), f"{rule['alert']}: a bare number in {rule['expr']!r}"


def test_every_alert_is_documented() -> None:
    alert_rules = [r for r in rules() if "alert" in r]
    assert {r["alert"] for r in alert_rules} == {
        "NetkitDnsErrorBudgetBurn",
        "NetkitDnsUpstreamDown",
        "NetkitDnsAllUpstreamsDown",
        "NetkitDnsServingStale",
        "NetkitDnsHighLatency",
    }
    for r in alert_rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]
        assert "for" in r, r["alert"]
    expected = {
        "NetkitDnsUpstreamDown": ("netkit_dns_upstream_healthy == 0", "1m", "warning"),
        "NetkitDnsAllUpstreamsDown": (
            "max by (instance) (netkit_dns_upstream_healthy) == 0",
            "1m",
            "critical",
        ),
    }
    for name, (expr, for_, severity) in expected.items():
        (r,) = alerts(name)
        assert (r["expr"], r["for"], r["labels"]["severity"]) == (expr, for_, severity)
    (stale,) = alerts("NetkitDnsServingStale")
    assert stale["expr"].startswith("netkit_dns:served_stale_ratio:rate5m > ") and stale["for"] == "5m"


def test_sli_recording_rules_for_every_window() -> None:
    base = {what: recording(f"netkit_dns:sli_{what}:rate5m")["expr"] for what in ("requests", "errors")}
    assert 'rcode="SERVFAIL"' in base["errors"] and "netkit_dns_dropped_total" in base["errors"]
    for window in RAW_WINDOWS:
        for what, template in base.items():
            # the same expression, with only the window changed
            assert recording(f"netkit_dns:sli_{what}:rate{window}")["expr"] == template.replace("5m", window)
    for window in AVERAGED_WINDOWS:
        for what in ("requests", "errors"):
            assert "avg_over_time(netkit_dns:sli_" in recording(f"netkit_dns:sli_{what}:rate{window}")["expr"]
    for window in RAW_WINDOWS + AVERAGED_WINDOWS:
        ratio = recording(f"netkit_dns:sli_error_ratio:rate{window}")["expr"]
        assert ratio == f"netkit_dns:sli_errors:rate{window} / netkit_dns:sli_requests:rate{window}"
        cluster = recording(f"cluster:netkit_dns_sli_error_ratio:rate{window}")["expr"]
        assert (
            cluster == f"sum(netkit_dns:sli_errors:rate{window}) / sum(netkit_dns:sli_requests:rate{window})"
        )
    # per node: every aggregation of the raw counters keeps `instance` and nothing else
    for r in rules():
        for by in re.findall(r"\b(?:sum|max|min) by \(([^)]*)\)", r["expr"]):
            assert by == "instance", f"{r.get('record') or r.get('alert')}: by ({by})"


def test_latency_sli_uses_the_128ms_bucket() -> None:
    """0.1 s is not a bucket boundary; 0.128 is the nearest one above it."""
    from dnscache.core.stats import DURATION_BUCKETS

    above = min(b for b in DURATION_BUCKETS if b >= 0.1)
    assert above == 0.128
    for window in ("5m", "1h"):
        expr = recording(f"netkit_dns:sli_latency_good_ratio:rate{window}")["expr"]
        assert re.findall(r'le="([^"]+)"', expr) == [str(above)]


def test_rules_name_only_exported_metrics() -> None:
    known = exported_metrics() | recorded()
    for r in rules():
        unknown = names_in(r["expr"]) - known
        assert not unknown, f"{r.get('record') or r.get('alert')}: unknown {unknown}"


# -- generated files ------------------------------------------------------------------------------
def test_generated_files_are_up_to_date() -> None:
    rendered = monitoring.render()
    assert set(rendered) == {PROMETHEUS_RULE, DASHBOARD}
    for path, text in rendered.items():
        assert path.is_file(), f"{path} missing: run .venv/bin/python deploy/monitoring/generate.py"
        assert path.read_text() == text, (
            f"{path} is out of date: run .venv/bin/python deploy/monitoring/generate.py"
        )


def test_prometheus_rule_holds_the_rules_file() -> None:
    (doc,) = list(yaml.safe_load_all(PROMETHEUS_RULE.read_text()))
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    meta = doc["metadata"]
    assert (meta["name"], meta["namespace"]) == ("netkit-dns", "kube-system")
    assert meta["labels"]["prometheus"] == "k8s" and meta["labels"]["role"] == "alert-rules"
    assert meta["labels"]["app.kubernetes.io/name"] == "netkit-dns"
    assert doc["spec"] == yaml.safe_load(RULES.read_text())


def test_generator_takes_the_objective_from_the_rules() -> None:
    gen = monitoring
    changed = RULES.read_text().replace("0.99999", "0.9995")
    board = json.loads(gen.render(changed)[DASHBOARD])
    text = json.dumps(board)
    assert "0.9995" in text and "0.99999" not in text
    obj = gen.objectives(yaml.safe_load(RULES.read_text()))
    assert (obj.availability, obj.burn_factors, obj.latency, obj.latency_bucket) == (
        0.99999,
        (1.0, 3.0, 6.0, 14.4),
        0.99,
        "0.128",
    )


# -- the dashboard --------------------------------------------------------------------------------
def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "netkit-dns" and board["schemaVersion"] == 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["multi"] and instance["includeAll"]
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}

    all_panels = list(panels(board))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in all_panels:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
        for t in p["targets"]:
            if t.get("range", True) and "rate(" in t["expr"]:
                assert "$__rate_interval" in t["expr"] or ":rate" in t["expr"], (p["title"], t["expr"])
    # panels do not overlap on the 24-column grid
    cells: set[tuple[int, int]] = set()
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine

    kinds = {p["type"] for p in all_panels}
    assert {"stat", "timeseries", "heatmap", "state-timeline", "table"} <= kinds
    titles = {p["title"]: p for p in all_panels}
    availability = titles["Availability (5m) vs objective"]["fieldConfig"]["defaults"]
    assert availability["custom"]["thresholdsStyle"]["mode"] == "line"
    assert {"color": "green", "value": 0.99999} in availability["thresholds"]["steps"]
    burn = titles["Burn rate (worst node)"]
    assert [t["legendFormat"] for t in burn["targets"]] == ["1h", "6h", "3d"]
    (heat,) = [p for p in all_panels if p["type"] == "heatmap"]
    assert heat["targets"][0]["format"] == "heatmap" and "_bucket" in heat["targets"][0]["expr"]
    assert any("histogram_quantile(0.99" in e for _, e in dashboard_queries(board))


def test_dashboard_queries_name_only_exported_metrics_and_recording_rules() -> None:
    known = exported_metrics() | recorded()
    seen: set[str] = set()
    for where, query in dashboard_queries(dashboard()):
        names = names_in(query)
        assert names, f"{where}: no netkit metric in {query!r}"
        assert not names - known, f"{where}: unknown {names - known} in {query!r}"
        seen |= names
    # the dashboard uses the recorded SLIs, not copies of their expressions
    assert {
        "netkit_dns:sli_error_ratio:rate5m",
        "netkit_dns:sli_error_ratio:rate30d",
        "netkit_dns:sli_errors:rate30d",
        "netkit_dns:sli_latency_good_ratio:rate5m",
        "netkit_dns_upstream_healthy",
        "netkit_dns_upstream_rtt_seconds",
        "netkit_dns_served_stale_total",
        "netkit_dns_cache_hits_total",
        "netkit_dns_request_duration_seconds_bucket",
        "netkit_dns_responses_total",
    } <= seen


def test_name_check_catches_a_typo() -> None:
    assert names_in('sum(rate(netkit_dns_request_total{rcode="SERVFAIL"}[5m]))') == {
        "netkit_dns_request_total"
    }
    assert "netkit_dns_request_total" not in exported_metrics()
    assert names_in('netkit_dns:sli_error_ratio:rate5m{instance=~"$instance"}') == {
        "netkit_dns:sli_error_ratio:rate5m"
    }


# -- kustomize ------------------------------------------------------------------------------------
def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_monitoring_is_an_optional_component_outside_the_base() -> None:
    k = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert k["kind"] == "Component" and k["resources"] == ["prometheusrule.yaml"]
    (gen,) = k["configMapGenerator"]
    assert gen["files"] == ["dashboards/netkit-dns.json"]
    assert gen["options"]["labels"]["grafana_dashboard"] == "1"
    assert gen["options"]["disableNameSuffixHash"] is True

    def reachable(directory: Path) -> Iterator[Path]:
        yield directory
        kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in (kust.get("resources") or []) + (kust.get("components") or []):
            target = (directory / entry).resolve()
            if target.is_dir():
                yield from reachable(target)
            else:
                yield target

    base = set(reachable(ROOT / "deploy"))
    assert MONITORING not in base and PROMETHEUS_RULE not in base  # the CRD may not exist


def test_kustomize_build_with_the_monitoring_components(tmp_path: Path) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed (the kustomization is checked above)")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(ROOT / "deploy", overlay)],
                "components": [
                    os.path.relpath(ROOT / "deploy" / "dnscache" / "monitoring", overlay),
                    os.path.relpath(MONITORING, overlay),
                ],
            }
        )
    )
    proc = subprocess.run([*command, str(overlay)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    built = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(proc.stdout) if d}
    rule = built[("PrometheusRule", "netkit-dns")]
    assert rule["metadata"]["namespace"] == "kube-system"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    cm = built[("ConfigMap", "netkit-dns-dashboard")]
    assert cm["metadata"]["namespace"] == "kube-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"netkit-dns.json": DASHBOARD.read_text()}
    assert ("ServiceMonitor", "netkit-dns") in built


def test_the_generator_script_finds_the_files_up_to_date() -> None:
    r = subprocess.run(
        [sys.executable, str(GENERATE), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
