"""Where a benchmark's results go: ``NAME.txt`` (the table printed), ``NAME.json`` (every figure)
and ``NAME.png`` (the plot) in the output directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_results(
    out: Path, name: str, text: str, result: dict[str, Any], plot: Callable[[dict[str, Any], Path], None]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.txt").write_text(text + "\n")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(result, out / f"{name}.png")
