"""Write the CRDs of ``netkit.control.core.crds`` to ``deploy/crds/`` (one file per kind and a
kustomization), or with ``--check`` say which files differ from what the source gives."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from netkit.control.core.crds import definitions

HEADER = "# Generated from netkit/control/core/crds.py by deploy/crds/generate.py: do not edit.\n"


def render() -> dict[str, str]:
    """File name -> text, for every kind and the kustomization."""
    files: dict[str, str] = {}
    for crd in definitions():
        name = f"{crd['metadata']['name']}.yaml"
        files[name] = HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    files["kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "deploy" / "crds")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [
            n
            for n, text in files.items()
            if not (args.out / n).is_file() or (args.out / n).read_text() != text
        ]
        extra = sorted(p.name for p in args.out.glob("*.yaml") if p.name not in files)
        for n in stale:
            print(f"{args.out / n}: differs from netkit/control/core/crds.py", file=sys.stderr)
        for n in extra:
            print(f"{args.out / n}: no kind of netkit/control/core/crds.py gives it", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, text in files.items():
        (args.out / n).write_text(text)
    print(f"wrote {len(files)} files to {args.out}")
    return 0
