"""``netkit bgp``: plan route reflectors, render speaker configs, migrate a live mesh."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from bgp.core.inventory import Inventory, InventoryError, load_inventory
from bgp.core.migration import migration_steps
from bgp.core.planner import (
    SessionPlan,
    diff_plans,
    mesh_plan,
    plan,
    plan_from_dict,
    route_problems,
    speakers_for,
)
from netkit.cli.cmdline import (
    OUTPUT_FORMATS,
    UsageError,
    add_file,
    add_output,
    command,
    emit,
    float_range,
    group,
    int_range,
    require_labs,
)
from netkit.cli.reflector import add_parser as add_reflector

DESCRIPTION = """\
iBGP route reflectors (RFC 4456) instead of the n(n-1)/2 full mesh.

  netkit bgp plan -f inventory.yaml               which nodes reflect, cluster ids, every session,
                                                  and the diff against the plan in force (--current)
  netkit bgp render -f inventory.yaml --to bird   the plan as BIRD 2 / FRR / GoBGP / Calico / ExaBGP
  netkit bgp migrate -f inventory.yaml --dry-run  the make-before-break steps, mesh -> reflectors
  netkit bgp migrate -f inventory.yaml --speakers speakers.yaml --out plan.yaml
                                                  run them on the speakers, checking between steps
  netkit bgp migrate --lab                        the same, live: 12 BIRD/FRR nodes in namespaces,
                                                  every FIB sampled every 80 ms; then kills a
                                                  reflector, restarts it, migrates back
  netkit bgp reflector -f FILE                    a route reflector in Python on ExaBGP

The inventory (nodes, failure-domain labels, "may reflect" marks) and the policy (reflectors per
domain, redundancy, cluster-id scheme, levels) are one YAML file; see docs/bgp.md.
"""

INVENTORY_EXAMPLE = """\
example inventory.yaml:
  asn: 64512
  nodes:
    - {name: node-a, address: 198.18.0.1, labels: {zone: a}, prefixes: [198.19.1.0/24]}
    - {name: node-b, address: 198.18.0.2, labels: {zone: b}, prefixes: [198.19.2.0/24]}
    - {name: node-c, address: 198.18.0.3, labels: {zone: c}, reflector: false}
  policy: {failure_domain: zone, redundancy: 2, reflectors_per_domain: 1}
"""

BUSY_REFLECTOR = 500  # sessions; BIRD handles more, but every one is a full table to resend

FORMATS = ("bird", "frr", "gobgp", "calico", "exabgp")


def _load(path: str) -> Inventory:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return load_inventory(text, path)


def _load_plan(path: str | None, inv: Inventory, target: bool = False) -> SessionPlan:
    """``mesh`` (the default, what Calico runs out of the box), ``rr`` (plan it now) or a file.

    A ``target`` (what speakers are to run: ``migrate --to``, ``render --plan``) read from a file
    must give every node every other node's route: an empty or partial file is refused, never
    taken as "remove the sessions it does not list"."""
    if path is None or path == "mesh":
        return mesh_plan(inv)
    if path == "rr":
        return plan(inv)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read plan {path}: {getattr(exc, 'strerror', None) or exc}") from None
    p = plan_from_dict(raw, path)
    unknown = sorted({n for s in p.sessions for n in (s.a, s.b)} - set(inv.names))
    if unknown:
        raise InventoryError(
            [
                f"{path}: sessions name nodes not in the inventory: {', '.join(unknown)} (a node stays in "
                "the inventory until a migration has removed its sessions)"
            ]
        )
    if not p.nodes:  # the migration checks the routes of the nodes a plan is for: never none
        p = dataclasses.replace(p, nodes=tuple(sorted(inv.names)))
    problems = route_problems(inv, p) if target else []
    if problems:
        raise InventoryError(
            [
                f"{path}: refused: running this plan would lose routes (a node leaving must be left out "
                "of its nodes: list)",
                *(f"{path}: {problem}" for problem in problems),
            ]
        )
    return p


def _plan_text(inv: Inventory, p: SessionPlan) -> list[str]:
    counts = p.per_node_counts()
    n = len(inv.nodes)
    mesh = sum(1 for i, a in enumerate(inv.nodes) for b in inv.nodes[i + 1 :] if a.asn == b.asn)
    lines = [f"{len(p.reflectors)} reflectors for {n} nodes; {len(p.sessions)} sessions (full mesh: {mesh})"]
    lines.append(f"{'reflector':<24} {'level':>5} {'cluster id':<16} {'domain':<12} {'sessions':>8}")
    for r in sorted(p.reflectors.values(), key=lambda r: (-r.level, r.node)):
        n_sessions = counts.get(r.node, 0)
        lines.append(f"{r.node:<24} {r.level:>5} {r.cluster_id:<16} {r.domain:<12} {n_sessions:>8}")
    busiest = max((counts.get(r, 0) for r in p.reflectors), default=0)
    if busiest > BUSY_REFLECTOR:
        lines.append(
            f"note: a reflector carries {busiest} sessions (above {BUSY_REFLECTOR}); raise "
            "policy.reflectors_per_domain or use levels: 2 (benchmarks/bgp_scale.py shows the effect)"
        )
    lines.append(f"{'node':<24} reflectors")
    for node in inv.names:
        if node not in p.reflectors:
            lines.append(f"{node:<24} {', '.join(p.reflectors_of(node))}")
    return lines


def cmd_plan(args: argparse.Namespace) -> int:
    inv = _load(args.file)
    current = _load_plan(args.current, inv)
    new = plan(inv, previous=current if current.kind == "rr" else None)
    if args.out:
        Path(args.out).write_text(yaml.safe_dump(new.to_dict(), sort_keys=False))
    if args.output != "text":
        emit(new.to_dict(), args.output)
        return 0
    print("\n".join(_plan_text(inv, new)))
    print(f"\ndiff against the current plan ({args.current or 'full mesh'}):")
    d = diff_plans(current, new)
    lines = d.lines()
    if not args.full_diff and len(lines) > 40:
        lines = [*lines[:30], f"... {len(lines) - 31} more lines (--full-diff shows all)", lines[-1]]
    print("\n".join(lines))
    return 0


def render(fmt: str, inv: Inventory, p: SessionPlan, node: str | None) -> dict[str, str]:
    """{file name: text} for ``fmt``; one file per node, or one for Calico."""
    configs = speakers_for(inv, p.sessions, p.cluster_ids)
    if node is not None:
        if node not in configs:
            raise UsageError(f"--node {node}: no such node in the inventory (it has: {', '.join(configs)})")
        configs = {node: configs[node]}
    if fmt == "calico":
        from bgp.core.render.calico import calico_yaml, render_calico

        asns = {c.asn for c in configs.values()}
        return {"calico.yaml": calico_yaml(render_calico(configs, min(asns)))}
    out: dict[str, str] = {}
    for name, cfg in configs.items():
        if fmt == "bird":
            from bgp.core.render.bird import render_bird

            out[f"{name}.bird.conf"] = render_bird(cfg)
        elif fmt == "frr":
            from bgp.core.render.frr import render_frr

            out[f"{name}.frr.conf"] = render_frr(cfg)
        elif fmt == "gobgp":
            from bgp.core.render.gobgp import render_gobgp

            out[f"{name}.gobgp.toml"] = render_gobgp(cfg)
        elif fmt == "exabgp":
            if not cfg.is_reflector:
                continue
            from bgp.core.render.exabgp import render_reflector_config

            out[f"{name}.reflector.yaml"] = render_reflector_config(cfg)
    return out


def cmd_render(args: argparse.Namespace) -> int:
    inv = _load(args.file)
    p = _load_plan(args.plan, inv, target=True)
    files = render(args.to, inv, p, args.node)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
        print(f"wrote {len(files)} files to {out}")
        return 0
    for name, text in files.items():
        if len(files) > 1:
            print(f"# ---- {name}")
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.lab:
        require_labs("netkit bgp migrate --lab")
        from labs.bgpmigrate import run_migration_lab

        report = run_migration_lab(
            nodes=args.nodes,
            batch=args.batch,
            kill_reflector=not args.no_kill,
            reverse=not args.no_reverse,
            progress=lambda line: print(line, flush=True),
        )
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    if not args.file:
        raise UsageError("give -f INVENTORY (with --dry-run or --speakers), or --lab")
    inv = _load(args.file)
    current = _load_plan(args.current, inv)
    target = _load_plan(args.to, inv, target=True)
    alt = frozenset(n.name for n in inv.nodes if n.alt_address)
    steps = migration_steps(current, target, args.batch, alt)
    if not steps:
        print("nothing to do: the current plan is the target")
        return 0
    print(f"{len(steps)} steps from {args.current or 'mesh'} to {args.to}:")
    for i, step in enumerate(steps, 1):
        print(f"{i:>3}. {step}  [{len(step.sessions)} sessions; configs change on {len(step.touched)} nodes]")
    if args.dry_run:
        return 0
    if not args.speakers:
        raise UsageError("give --speakers FILE (how to reach each node's speaker), or --dry-run")
    return _migrate_live(args, inv, current, target, steps)


def _migrate_live(
    args: argparse.Namespace, inv: Inventory, current: SessionPlan, target: SessionPlan, steps: list[Any]
) -> int:
    from bgp.control import ControlError, load_speakers
    from bgp.migrate import MigrationError, run_migration

    try:
        spec = load_speakers(Path(args.speakers).read_text(), args.speakers)
        configs = speakers_for(inv, current.sessions, current.cluster_ids, spec.timers)
        controls = spec.controls(configs)
    except OSError as exc:
        raise UsageError(f"cannot read {args.speakers}: {exc.strerror or exc}") from None
    except ControlError as exc:
        raise UsageError(str(exc)) from None

    def show(i: int, n: int, step: Any) -> None:
        print(f"step {i}/{n}: {step}", flush=True)

    try:
        result = run_migration(
            inv,
            current,
            target,
            controls,
            timers=spec.timers,
            steps=steps,
            on_step=show,
            step_timeout=args.step_timeout,
        )
    except MigrationError as exc:
        print(f"netkit bgp migrate: {exc}", file=sys.stderr)
        _write_in_force(args.out, exc, steps, current, target)
        return 1
    print("\n".join(result.table()))
    done = SessionPlan(target.kind, target.reflectors, result.sessions, target.nodes)
    if args.out:
        Path(args.out).write_text(yaml.safe_dump(done.to_dict(), sort_keys=False))
        print(f"the plan now in force is in {args.out} (give it as --current next time)")
    return 0


def _write_in_force(
    output: str | None, exc: Any, steps: list[Any], current: SessionPlan, target: SessionPlan
) -> None:
    """After a failed step, write the topology the speakers run (to resume with --current), when
    it is one step's: the failed step's if it reached every node, the previous one's if none."""
    if not output or exc.applied_on:  # no file asked for, or a mix of two steps
        return
    i = steps.index(exc.step)
    if exc.applied_on is None:
        sessions, ids = exc.step.sessions, exc.step.cluster_ids
    elif i > 0:
        sessions, ids = steps[i - 1].sessions, steps[i - 1].cluster_ids
    else:
        sessions, ids = current.sessions, current.cluster_ids
    reflectors = {**current.reflectors, **target.reflectors}
    in_force = {r: reflectors[r] for r in ids if r in reflectors}
    plan_in_force = (
        SessionPlan("rr", in_force, sessions, target.nodes)
        if in_force
        else SessionPlan("mesh", {}, sessions, target.nodes)
    )
    Path(output).write_text(yaml.safe_dump(plan_in_force.to_dict(), sort_keys=False))
    print(
        f"netkit bgp migrate: the topology in force is in {output} (give it as --current to resume)",
        file=sys.stderr,
    )


def add_parser(sub: Any) -> None:
    cmds = group(sub, "bgp", help="iBGP route reflectors: plan, render, migrate", description=DESCRIPTION)

    p = command(
        cmds,
        "plan",
        help="plan reflectors and sessions from an inventory",
        description="Plan route reflectors: which nodes reflect, their cluster ids, every session; "
        "print the diff against the plan in force.\n\nExit status: 0 planned, 2 invalid inventory, "
        "plan file or usage (every problem of the inventory is listed, each with its field).",
        epilog=INVENTORY_EXAMPLE,
        kind="query",
        func=cmd_plan,
        examples=[
            "netkit bgp plan -f inventory.yaml --out plan.yaml",
            "netkit bgp plan -f inventory.yaml --current plan.yaml",
            "netkit bgp plan -f inventory.yaml -o json",
        ],
    )
    add_file(p, "inventory + policy YAML")
    p.add_argument(
        "--current",
        metavar="PLAN",
        help="the plan in force (a file written by --out), or 'mesh' (default); kept reflectors "
        "and sessions stay put",
    )
    p.add_argument("--out", metavar="FILE", help="also write the plan as YAML here")
    add_output(p)
    p.add_argument("--format", dest="output", type=_format, metavar="FORMAT", help="the same as -o")
    p.add_argument("--full-diff", action="store_true", help="print every changed session")

    r = command(
        cmds,
        "render",
        help="render the plan for BIRD, FRR, GoBGP, Calico or the netkit reflector",
        description="Render one config per node (or Calico resources for the cluster) from a plan: "
        "printed, or one file per node in --out DIR.\n\nExit status: 0 rendered, 2 invalid "
        "inventory, plan file or usage.",
        kind="query",
        func=cmd_render,
        examples=[
            "netkit bgp render -f inventory.yaml --to bird --out bird/",
            "netkit bgp render -f inventory.yaml --plan plan.yaml --to calico",
            "netkit bgp render -f inventory.yaml --to frr --node node-a",
        ],
    )
    add_file(r, "inventory + policy YAML")
    r.add_argument("--plan", help="a plan file, 'rr' (plan now) or 'mesh'", default="rr")
    r.add_argument("--to", choices=FORMATS, required=True, help="the speaker to render for")
    r.add_argument("--node", help="only this node")
    r.add_argument("--out", metavar="DIR", help="write one file per node here instead of printing them")

    m = command(
        cmds,
        "migrate",
        help="make-before-break migration mesh <-> reflectors (dry run, live speakers, or a lab)",
        description="Migrate without losing a route: new sessions beside the old (on alternate "
        "addresses where a session changes role), a check that every node learns every prefix over "
        "the new sessions, then old sessions removed in batches with the check after each.\n\n"
        "--dry-run prints the steps and changes nothing. Exit status: 0 migrated (or nothing to "
        "do), 1 a step failed (the speakers keep what they run; --out gets the topology in force "
        "when it is one step's), 2 invalid inventory, plan, speakers file or usage (nothing changed).",
        kind="change",
        func=cmd_migrate,
        examples=[
            "netkit bgp migrate -f inventory.yaml --dry-run",
            "netkit bgp migrate -f inventory.yaml --speakers speakers.yaml --out plan.yaml",
            "netkit bgp migrate -f inventory.yaml --current plan.yaml --to mesh --dry-run",
            "netkit bgp migrate --lab",
        ],
    )
    add_file(m, "inventory + policy YAML", required=False)
    m.add_argument("--current", help="plan in force: 'mesh' (default), 'rr' or a file", default=None)
    m.add_argument("--to", help="target: 'rr', 'mesh' or a plan file", default="rr")
    m.add_argument(
        "--batch", type=int_range(1, 100_000), default=10, metavar="N", help="old sessions removed per step"
    )
    m.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    m.add_argument(
        "--speakers",
        metavar="FILE",
        help="drive the running speakers listed here (BIRD control socket + config, or FRR vty socket; "
        "see docs/bgp.md); they must run the rendered config of --current",
    )
    m.add_argument("--out", metavar="FILE", help="write the plan in force afterwards here")
    m.add_argument(
        "--step-timeout",
        type=float_range(1, 3600),
        default=60.0,
        metavar="S",
        help="seconds a step may take to settle",
    )
    m.add_argument("--lab", action="store_true", help="run it live in a namespace lab (root; BIRD and FRR)")
    m.add_argument("--nodes", type=int_range(4, 200), default=12, metavar="N", help="lab size, 4-200")
    m.add_argument("--no-kill", action="store_true", help="lab: skip killing and restarting a reflector")
    m.add_argument("--no-reverse", action="store_true", help="lab: skip the migration back to the mesh")

    add_reflector(cmds)


def _format(text: str) -> str:
    if text not in OUTPUT_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    return text
