"""results.json, PNG plots, report.html and the terminal table of a chaos run."""

from __future__ import annotations

import html
import itertools
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labs.chaos.lab import NODE_DNSMASQ_ARGS, NODE_UNBOUND_EXTRA, UPSTREAM_UNBOUND_EXTRA
from labs.chaos.schedule import FAULTS, Score, Window
from netkit import __version__

if TYPE_CHECKING:
    from labs.chaos.runner import Options

PLOTS = ("availability.png", "latency.png", "windows.png")
COLORS = {"netkit": "#1f77b4", "unbound": "#d62728", "dnsmasq": "#2ca02c"}
FAULT_COLORS = {
    "kill": "#f4b6b6",
    "stop": "#f7cfa1",
    "loss": "#f9e79f",
    "delay": "#d5f5a3",
    "servfail": "#a9dfbf",
    "garbage": "#aed6f1",
    "all_down": "#c39bd3",
    "cache_restart": "#d7dbdd",
    "loss_all": "#f5cba7",
    "upgrade": "#a3e4d7",
    "crash_restart": "#808b96",
}


def _version(cmd: list[str], pattern: str) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    m = re.search(pattern, res.stdout + res.stderr)
    return m.group(1) if m else None


def tool_versions() -> dict[str, str | None]:
    return {
        "netkit": __version__,
        "unbound": _version(["unbound", "-V"], r"Version (\S+)"),
        "dnsmasq": _version(["dnsmasq", "--version"], r"version (\S+)"),
        "nsd": _version(["nsd", "-v"], r"NSD version (\S+)"),
        "knot": _version(["knotd", "-V"], r"\(Knot DNS\),? version (\S+)"),
    }


def _metric_deltas(snaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Counter increases of netkit between consecutive snapshots, attributed to the window that
    started at the first one (a counter that went down was reset by a restart: its new value)."""
    out = []
    for a, b in itertools.pairwise(snaps):
        ma, mb = a["metrics"], b["metrics"]
        if "error" in ma or "error" in mb:
            out.append({"window": a["window"], "t": a["t"], "error": ma.get("error") or mb.get("error")})
            continue
        deltas = {}
        for k, v in mb.items():
            if "_total" not in k and not k.endswith("_count"):
                continue
            d = v - ma.get(k, 0.0)
            if d < 0:
                d = v
            if d:
                deltas[k] = int(d) if float(d).is_integer() else round(d, 6)
        gauges = {k: v for k, v in ma.items() if "upstream_healthy" in k}
        out.append(
            {"window": a["window"], "t": a["t"], "counters": deltas, "upstream_healthy_at_start": gauges}
        )
    return out


def build_results(
    *,
    opts: Options,
    run_id: str,
    windows: Sequence[Window],
    scores: dict[str, Score],
    generators: dict[str, dict[str, Any]],
    stream_digest: str,
    faults: list[dict[str, Any]],
    restarts: dict[str, dict[str, Any]],
    netkit_metrics: list[dict[str, Any]],
    proxies: dict[str, Any],
    harness_problems: list[str],
    names: int,
) -> dict[str, Any]:
    systems = {}
    for s, sc in scores.items():
        systems[s] = {
            **sc.to_dict(windows),
            "generator": generators.get(s, {}),
            "restart": restarts.get(s),
            "timeline_bin_s": sc.bin_width,
            "timeline": sc.timeline,
        }
    return {
        "run": {
            "run_id": run_id,
            "command": opts.command,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "duration_s": opts.duration,
            "qps": opts.qps,
            "seed": opts.seed,
            "systems": list(scores),
            "deadline_s": opts.deadline,
            "queries_per_system": round(opts.qps * opts.duration),
            "names_in_zones": names,
            "mix": opts.mix.to_dict(),
            "stream_sha256": stream_digest,
            "host": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
            },
            "versions": tool_versions(),
        },
        "definitions": {
            "success": f"the expected rcode and RRset (sorted RDATA) within {opts.deadline:g} s; "
            "no client retries",
            "availability": "successful queries / queries sent, by send time",
            "latency": "percentiles over successful queries (failures count in availability only)",
            "headline": "every query except cold names sent during all_down (those are in all_down_cold)",
            "all_down_cold_strict": "cold names sent during all_down (0.2 s after it began, one deadline "
            "before it ended): nothing can answer them, so all must fail (a harness self-check)",
            "all_down_seen_before": "queries during all_down for a question (name and type) this system had "
            "answered correctly before the window began: a cache can answer these (serve-stale)",
            "all_down_never_answered_before": "the other queries during all_down: no cache can answer them",
            "faults": FAULTS,
        },
        "settings": {
            "netkit": "netkit dns serve defaults + --cache-size 200000, stub zone cluster.local, "
            "--control/--cache-file for the zero-gap restart, --keeper true (as deployed)",
            "unbound": {k: v for k, v in NODE_UNBOUND_EXTRA.items()},
            "dnsmasq": [*NODE_DNSMASQ_ARGS, "--cache-size=200000", "--server=/cluster.local/<each proxy>"],
            "upstream_unbound": {k: v for k, v in UPSTREAM_UNBOUND_EXTRA.items()},
        },
        "schedule": [w.to_dict() for w in windows],
        "systems": systems,
        "faults_applied": faults,
        "netkit_metrics_by_window": _metric_deltas(netkit_metrics),
        "proxies": proxies,
        "harness_problems": harness_problems,
    }


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------


def _pct(a: float | None, digits: int = 4) -> str:
    return "-" if a is None else f"{a * 100:.{digits}f}%"


def _cell(summary: dict[str, Any]) -> str:
    return f"{_pct(summary['availability'])} {summary['failures']:>6}/{summary['queries']:<8}"


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def terminal_table(results: dict[str, Any]) -> str:
    run = results["run"]
    systems = results["systems"]
    names = list(systems)
    w0 = 24
    cw = 27
    lines = [
        f"netkit chaos dns: {run['duration_s']:g} s at {run['qps']:g} QPS per system, seed {run['seed']}, "
        f"deadline {run['deadline_s']:g} s (run {run['run_id']})",
        "",
        f"{'window':<{w0}} {'from-to s':>11}  "
        + "".join(f"{n + ' avail  fail/queries':<{cw}}" for n in names),
    ]
    for i, w in enumerate(results["schedule"]):
        cells = "".join(f"{_cell(systems[n]['windows'][i]):<{cw}}" for n in names)
        lines.append(f"{w['label']:<{w0}} {w['start']:5.0f}-{w['end']:<5.0f}  {cells}")
    lines.append("-" * (w0 + 13 + cw * len(names)))
    for key, title in (
        ("headline", "HEADLINE (excl. all_down cold)"),
        ("all_down_cold", "all_down: cold names"),
        ("all_down_seen_before", "all_down: answered before"),
        ("all_down_never_answered_before", "all_down: never answered"),
        ("overall", "all queries"),
    ):
        cells = "".join(f"{_cell(systems[n][key]):<{cw}}" for n in names)
        lines.append(f"{title:<{w0 + 13}}  {cells}")
    cells = "".join(
        f"{_ms(systems[n]['headline']['p50_ms']) + '/' + _ms(systems[n]['headline']['p99_ms']) + '/' + _ms(systems[n]['headline']['p999_ms']):<{cw}}"  # noqa: E501
        for n in names
    )
    lines.append(f"{'latency p50/p99/p999 ms':<{w0 + 13}}  {cells}")
    cells = "".join(f"{systems[n]['headline']['nines']!s:<{cw}}" for n in names)
    lines.append(f"{'headline nines':<{w0 + 13}}  {cells}")
    cells = ""
    for n in names:
        g = systems[n]["generator"]
        cells += (
            f"{str(g.get('achieved_qps')) + ' q/s, p99 ' + _ms(g.get('lateness_p99_ms')) + ' ms late':<{cw}}"
        )
    lines.append(f"{'generator rate, lateness':<{w0 + 13}}  {cells}")
    cells = "".join(
        f"{str(systems[n]['generator'].get('lateness_max_ms')) + ' ms max late':<{cw}}" for n in names
    )
    lines.append(f"{'':<{w0 + 13}}  {cells}")
    for n in names:
        for how, r in (systems[n].get("restart") or {}).items():
            lines.append(
                f"{how} {n}: {r.get('method', '')} {r.get('seconds', '')} s {r.get('error', '')}".rstrip()
            )
    if results["harness_problems"]:
        lines += ["", "HARNESS SELF-CHECK FAILED:"] + [f"  - {p}" for p in results["harness_problems"]]
    else:
        lines += ["", "harness self-checks: passed (query counts, every window populated, "
                  "all_down cold names failed everywhere)"]  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plots and HTML
# --------------------------------------------------------------------------------------------


def _shade(ax: Any, windows: Sequence[Window], labels: bool) -> None:
    for w in windows:
        if not w.is_fault:
            continue
        ax.axvspan(w.start, w.end, color=FAULT_COLORS.get(w.kind, "#eeeeee"), alpha=0.6, lw=0)
        if labels:
            ax.text(
                (w.start + w.end) / 2, 1.0, w.label, transform=ax.get_xaxis_transform(),
                rotation=90, va="top", ha="center", fontsize=7,
            )  # fmt: skip


def write_plots(scores: dict[str, Score], windows: Sequence[Window], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # availability over time + failures per bin
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True, height_ratios=[3, 2])
    for s, sc in scores.items():
        xs = [b["t"] for b in sc.timeline]
        avail = [None if b["availability"] is None else 100 * b["availability"] for b in sc.timeline]
        ax1.plot(xs, avail, label=s, color=COLORS.get(s), lw=1.2)
        ax2.plot(xs, [max(b["failures"], 0.5) for b in sc.timeline], label=s, color=COLORS.get(s), lw=1)
    _shade(ax1, windows, True)
    _shade(ax2, windows, False)
    ax1.set_ylabel("availability per bin (%)")
    ax1.set_ylim(-2, 102)
    ax1.legend(loc="lower left")
    ax1.set_title(
        f"Availability over time ({scores[next(iter(scores))].bin_width:g} s bins); shaded: fault windows"
    )
    ax2.set_yscale("log")
    ax2.set_ylabel("failed queries per bin (0 drawn at 0.5)")
    ax2.set_xlabel("seconds since the first query")
    fig.tight_layout()
    fig.savefig(out / "availability.png", dpi=110)
    plt.close(fig)
    written.append("availability.png")

    fig, ax = plt.subplots(figsize=(13, 5))
    for s, sc in scores.items():
        xs = [b["t"] for b in sc.timeline]
        ax.plot(xs, [b["p99_ms"] for b in sc.timeline], label=f"{s} p99", color=COLORS.get(s), lw=1.2)
        ax.plot(xs, [b["p50_ms"] for b in sc.timeline], label=f"{s} p50", color=COLORS.get(s), lw=0.8, ls=":")
    _shade(ax, windows, True)
    ax.set_yscale("log")
    ax.set_ylabel("latency of successful queries (ms)")
    ax.set_xlabel("seconds since the first query")
    ax.set_title("Latency over time (p50 dotted, p99 solid)")
    ax.legend(loc="upper left", fontsize=8, ncol=len(scores))
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")

    fig, ax = plt.subplots(figsize=(13, 4.5))
    n = len(scores)
    width = 0.8 / n
    for k, (s, sc) in enumerate(scores.items()):
        vals = [t.summary()["nines"] or 0.0 for t in sc.windows]
        ax.bar([i + k * width for i in range(len(windows))], vals, width, label=s, color=COLORS.get(s))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(windows))])
    ax.set_xticklabels([w.label for w in windows], rotation=35, ha="right", fontsize=8)
    ax.axhline(5, color="black", lw=0.8, ls="--")
    ax.set_ylabel("nines of availability (9 = no failure)")
    ax.set_title("Availability per window, in nines (dashed: 99.999 %)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "windows.png", dpi=110)
    plt.close(fig)
    written.append("windows.png")
    return written


def _td(v: Any) -> str:
    return f"<td>{html.escape(str(v))}</td>"


def write_html(results: dict[str, Any], out: Path, plots: list[str]) -> None:
    run = results["run"]
    systems = results["systems"]
    names = list(systems)
    h = [
        "<!doctype html><html><head><meta charset='utf-8'><title>netkit chaos dns</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}.bad{background:#fdd}.ok{background:#dfd}code{font-size:12px}</style>",
        "</head><body>",
        f"<h1>netkit chaos dns — run {html.escape(run['run_id'])}</h1>",
        f"<p>{run['duration_s']:g} s at {run['qps']:g} QPS per system "
        f"({run['queries_per_system']:,} queries each), seed {run['seed']}, "
        f"deadline {run['deadline_s']:g} s, no client retries. Systems: {', '.join(names)}. Stream sha256 "
        f"<code>{run['stream_sha256'][:16]}…</code> (identical for all).</p>",
        f"<p><code>{html.escape(run['command'])}</code></p>",
        "<h2>Headline</h2><table><tr><th>system</th><th>availability</th><th>nines</th><th>queries</th>"
        "<th>failures</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>all_down cold (separate)</th>"
        "<th>all queries</th><th>generator q/s</th><th>lateness p99/max ms</th></tr>",
    ]
    for n in names:
        hd, adc, ov, g = (systems[n][k] for k in ("headline", "all_down_cold", "overall", "generator"))
        cls = "ok" if (hd["availability"] or 0) >= 0.99999 else "bad"
        h.append(
            f"<tr><td>{n}</td><td class='{cls}'>{_pct(hd['availability'])}</td>{_td(hd['nines'])}"
            f"{_td(hd['queries'])}{_td(hd['failures'])}{_td(_ms(hd['p50_ms']))}{_td(_ms(hd['p99_ms']))}"
            f"{_td(_ms(hd['p999_ms']))}{_td(str(adc['failures']) + '/' + str(adc['queries']) + ' failed')}"
            f"{_td(_pct(ov['availability']))}{_td(g.get('achieved_qps'))}"
            f"{_td(str(g.get('lateness_p99_ms')) + '/' + str(g.get('lateness_max_ms')))}</tr>"
        )
    h.append("</table>")
    for p in plots:
        h.append(f"<p><img src='{p}' alt='{p}' style='max-width:100%'></p>")
    h.append("<h2>Per window</h2><table><tr><th>window</th><th>from-to s</th>")
    h += [f"<th>{n} availability</th><th>{n} fail/queries</th><th>{n} p99 ms</th>" for n in names]
    h.append("</tr>")
    for i, w in enumerate(results["schedule"]):
        row = f"<tr><td>{html.escape(w['label'])}</td><td>{w['start']:.1f}-{w['end']:.1f}</td>"
        for n in names:
            s = systems[n]["windows"][i]
            cls = "ok" if (s["availability"] or 0) >= 0.99999 else "bad"
            reasons = ", ".join(f"{k} {v}" for k, v in s["failures_by_reason"].items())
            row += (
                f"<td class='{cls}'>{_pct(s['availability'])}</td><td title='{html.escape(reasons)}'>"
                f"{s['failures']}/{s['queries']}</td>{_td(_ms(s['p99_ms']))}"
            )
        h.append(row + "</tr>")
    h.append("</table><p>Hover a failure count for its reasons. Per-class numbers are in results.json.</p>")
    h.append(
        "<h2>Faults as applied</h2><table><tr><th>t (s)</th><th>lag (ms)</th><th>action</th>"
        "<th>took (s)</th><th>result</th></tr>"
    )
    for f in results["faults_applied"]:
        detail = f.get("error") or json.dumps(f.get("result"))
        h.append(
            f"<tr>{_td(f['t'])}{_td(f.get('lag_ms'))}{_td(f['action'])}{_td(f['took_s'])}"
            f"<td style='text-align:left'><code>{html.escape(detail[:400])}</code></td></tr>"
        )
    h.append("</table><h2>Fault kinds</h2><ul>")
    h += [f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in FAULTS.items()]
    h.append("</ul><h2>Settings of the caches under test</h2><pre>")
    h.append(html.escape(json.dumps(results["settings"], indent=1)))
    h.append("</pre><h2>Versions</h2><pre>" + html.escape(json.dumps(run["versions"], indent=1)) + "</pre>")
    if results["harness_problems"]:
        h.append("<h2 class='bad'>Harness self-check FAILED</h2><ul>")
        h += [f"<li>{html.escape(p)}</li>" for p in results["harness_problems"]]
        h.append("</ul>")
    else:
        h.append("<p class='ok'>Harness self-checks passed.</p>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h) + "\n")


def write_all(
    results: dict[str, Any],
    scores: dict[str, Score],
    windows: Sequence[Window],
    out: Path,
    plots: bool = True,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    written = write_plots(scores, windows, out) if plots else []
    write_html(results, out, written)
