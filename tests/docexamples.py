"""Every command line the project documents: the Examples of every `netkit` command's --help, and
the command lines of README.md, docs/*.md and deploy/README.md (code blocks and inline code).

A line is an *example* when it can be typed as it is; a *synopsis* when it shows the shape of a
command with placeholders (``[--netns NS]``, ``FILE``, ``a|b``, ``...``); a *reference* when it
only names a command (``netkit dns serve``) or a command's help. In a code block with ``$ ``
prompts, only the prompted lines are commands (the rest is their output).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/*.md", "deploy/README.md")
_COMMAND = re.compile(r"^(netkit|python -m labs\.uml|python -m bgp\.reflector) ")
_PLACEHOLDER = re.compile(r"^(-[-\w]+=)?[A-Z][A-Z0-9_:\[\].]*$")  # FILE, ADDR:PORT, CMD, --x=N


@dataclass(frozen=True)
class Documented:
    text: str  # the command line, continuation lines joined, comment kept
    where: str  # file:line or "netkit l2 apply --help"
    kind: str  # example, synopsis or reference

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def classify(text: str) -> str:
    words = shlex.split(text, comments=True)
    if any(c in text for c in ("[", "|", "...", "…")) or any(_PLACEHOLDER.match(w) for w in words[1:]):
        return "synopsis"
    flags = [w for w in words if w.startswith("-")]
    if not flags or flags == ["--help"]:
        return "reference"
    return "example"


def _blocks(lines: list[str]) -> list[list[tuple[int, str]]]:
    """Code blocks (fenced, or indented by 4 spaces) as lists of (line number, text)."""
    out: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    fenced = False
    for i, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            if fenced:
                out.append(current)
                current = []
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") or (current and not line.strip()):
            current.append((i, line))
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def from_markdown(path: Path) -> list[Documented]:
    lines = path.read_text().splitlines()
    rel = path.relative_to(ROOT)
    found: list[Documented] = []
    for block in _blocks(lines):
        prompted = any(text.strip().startswith("$ ") for _, text in block)
        j = 0
        while j < len(block):
            n, text = block[j]
            s = text.strip()
            if prompted:
                if not s.startswith("$ "):
                    j += 1
                    continue
                s = s[2:]
            if _COMMAND.match(s):
                while s.endswith("\\") and j + 1 < len(block):
                    j += 1
                    s = s[:-1].rstrip() + " " + block[j][1].strip()
                found.append(Documented(s, f"{rel}:{n}", classify(s)))
            j += 1
    for n, line in enumerate(lines, 1):
        for m in re.finditer(r"`((?:netkit|python -m labs\.uml) [^`]+)`", line):
            if m.group(1).startswith(("netkit_", "netkit/", "netkit.", "netkit-", "netkit:")):
                continue
            found.append(Documented(m.group(1), f"{rel}:{n}", classify(m.group(1))))
    return found


def from_help() -> list[Documented]:
    from netkit.cli import build_parser
    from netkit.cli.cmdline import CommandInfo, leaves

    found = []
    for leaf in leaves(build_parser()):
        info = leaf.get_default("_info")
        assert isinstance(info, CommandInfo)
        found += [Documented(e, f"{leaf.prog} --help", "example") for e in info.examples]
    return found


def yaml_blocks() -> list[tuple[str, str]]:
    """(file:line, text) of every code block of the documents that is a YAML mapping."""
    import yaml

    out = []
    for path in [p for pattern in DOCUMENTS for p in sorted(ROOT.glob(pattern))]:
        lines = path.read_text().splitlines()
        for block in _blocks(lines):
            fenced = not block[0][1].startswith("    ")
            text = "\n".join(line if fenced else line[4:] for _, line in block)
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(doc, dict):
                out.append((f"{path.relative_to(ROOT)}:{block[0][0]}", text))
    return out


def documented() -> list[Documented]:
    docs = [p for pattern in DOCUMENTS for p in sorted(ROOT.glob(pattern))]
    return from_help() + [d for p in docs for d in from_markdown(p)]
