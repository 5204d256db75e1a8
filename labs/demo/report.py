"""The demo's report (effects): ``DIR/index.html`` with a table per phase, the plots (prefixes
held per node over time, DNS answers per second with the faults marked, the isolation matrix)
and what kubectl showed; ``DIR/report.json`` with every figure; and the terminal summary."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from labs.demo.phases import DemoReport

__all__ = ["summary", "write_report"]

STYLE = " ".join(
    [
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}",
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}",
        "table{border-collapse:collapse}",
        "pre{background:#f4f4f4;padding:8px;overflow:auto;font-size:12px}",
    ]
)


def summary(r: DemoReport) -> str:
    lines = [
        f"netkit lab demo: {r.nodes} nodes, {r.seconds:.0f} s — {'every proof held' if r.ok else 'FAILED'}"
    ]
    for i, p in enumerate(r.phases, 1):
        figures = ", ".join(f"{k} {v}" for k, v in p.figures.items())
        lines.append(
            f"  {i:>2}. {'ok    ' if p.ok else 'FAILED'} {p.name:<13} {p.seconds:>5.1f} s  {figures}"
        )
        if not p.ok and p.detail:
            lines.append(f"      {p.detail[:300]}")
    return "\n".join(lines)


def _plots(r: DemoReport, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    faults = [(p.name, p.at) for p in r.phases if p.at != (0.0, 0.0)]
    if r.prefixes:
        fig, ax = plt.subplots(figsize=(10, 3.6))
        nodes = sorted({n for _, missing in r.prefixes for n in missing}, key=lambda n: int(n[1:]))
        for n in nodes:
            ys = [missing.get(n, float("nan")) for _, missing in r.prefixes]
            ax.plot([t for t, _ in r.prefixes], ys, label=n, lw=1.2, drawstyle="steps-post")
        _shade(ax, faults)
        ax.set_xlabel("seconds")
        ax.set_ylabel("required prefixes missing")
        ax.set_title("every node's kernel FIB: other nodes' pod CIDRs it lacks (0 is good)")
        ax.legend(fontsize=7, ncol=6)
        fig.tight_layout()
        fig.savefig(out / "prefixes.png", dpi=100)
        plt.close(fig)
        made.append("prefixes.png")
    if r.dns:
        fig, ax = plt.subplots(figsize=(10, 3.2))
        secs = sorted(r.dns)
        ax.bar(secs, [r.dns[s][1] for s in secs], color="tab:green", label="answered", width=1.0)
        ax.bar(
            secs,
            [r.dns[s][2] for s in secs],
            bottom=[r.dns[s][1] for s in secs],
            color="tab:red",
            label="failed",
            width=1.0,
        )
        _shade(ax, faults)
        ax.set_xlabel("seconds")
        ax.set_ylabel("queries / s (all nodes)")
        ax.set_title("node-local DNS: hot names asked on every node, 10 a second each")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "dns.png", dpi=100)
        plt.close(fig)
        made.append("dns.png")
    return made


def _shade(ax: Any, faults: list[tuple[str, tuple[float, float]]]) -> None:
    """The phases' fault windows (and the migration's), greyed and named."""
    top = ax.get_ylim()[1]
    for name, (a, b) in faults:
        ax.axvspan(a, b, color="grey", alpha=0.2)
        ax.text(a, top * 0.9, name, fontsize=7)


def _matrix(r: DemoReport) -> str:
    if not r.matrix:
        return ""
    names = list(r.matrix)
    rows = ["<tr><th>from \\ to</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"]
    for a in names:
        cells = []
        for b in names:
            if a == b:
                cells.append("<td></td>")
                continue
            got, want = r.matrix[a][b], r.expected[a][b]
            colour = "#cfc" if got == want else "#f99"
            cells.append(f'<td style="background:{colour}">{"reached" if got else "—"}</td>')
        rows.append(f"<tr><th>{html.escape(a)}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Isolation matrix (ping)</h2><table>"
        + "".join(rows)
        + "</table><p>green: as expected (same tenant reached, other tenant not); red: a leak or a miss.</p>"
    )


def write_report(r: DemoReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(r.to_dict(), indent=2, default=str) + "\n")
    try:
        plots = _plots(r, out)
    except Exception as exc:  # a plot that cannot be drawn does not hide the figures
        plots = []
        (out / "plots-error.txt").write_text(str(exc))
    parts: list[str] = [
        "<!doctype html><meta charset=utf-8><title>netkit lab demo</title>",
        "<style>" + STYLE + "</style>",
        f"<h1>netkit lab demo: {r.nodes} nodes — {'every proof held' if r.ok else 'FAILED'}</h1>",
        f"<p>{r.seconds:.0f} s in all.</p><h2>Phases</h2><table>",
        "<tr>" + "".join(f"<th>{h}</th>" for h in ("#", "phase", "result", "s", "figures")) + "</tr>",
    ]
    for i, p in enumerate(r.phases, 1):
        figures = "<br>".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in p.figures.items())
        if p.detail and not p.ok:
            figures += f"<br><b>{html.escape(p.detail[:1500])}</b>"
        colour = "#cfc" if p.ok else "#f99"
        result = f'<td style="background:{colour}">{"ok" if p.ok else "FAILED"}</td>'
        title = html.escape(p.title or p.name)
        parts.append(
            f"<tr><td>{i}</td><td>{title}</td>{result}<td>{p.seconds:.1f}</td><td>{figures}</td></tr>"
        )
    parts.append("</table>")
    for png in plots:
        parts.append(f'<h2>{png[:-4]}</h2><img src="{png}" style="max-width:100%">')
    parts.append(_matrix(r))
    if r.shown:
        parts.append("<h2>What kubectl showed</h2>")
        for cmd, text in r.shown:
            parts.append(f"<pre>$ {html.escape(cmd)}\n{html.escape(text)}</pre>")
    index = out / "index.html"
    index.write_text("\n".join(parts) + "\n")
    return index
