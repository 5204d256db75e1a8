"""kubectl, the real client nobody here wrote, against the lab API server (effects): each call a
process with a HOME of its own (so no discovery cache from an earlier server hides anything)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["Kubectl", "KubectlError"]

ROOT = Path(__file__).resolve().parents[2]


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message has the command and what it printed."""


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(home))

    def __call__(
        self, *args: str, stdin: str | None = None, ok: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS`` (from the checkout, so ``-k deploy/crds`` works); with ``ok``, a
        non-zero exit raises ``KubectlError``."""
        done = subprocess.run(
            ["kubectl", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if ok and done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}".strip())
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)
