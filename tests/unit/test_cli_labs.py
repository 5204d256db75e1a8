"""Installed from the wheel there are no labs: the commands built on them fail in one line, and
the chaos group is left out of the parser; everything else works."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from netkit.cli import build_parser, main


@pytest.fixture
def no_labs(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "labs" or name.startswith("labs.") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["dns", "demo"], "netkit dns demo"),
        (["l2", "verify"], "netkit l2 verify"),
        (["bgp", "migrate", "--lab"], "netkit bgp migrate --lab"),
    ],
)
def test_a_lab_command_without_the_labs_is_one_line(
    no_labs: None, argv: list[str], what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{what} runs from a netkit source checkout: the labs package is not installed")
    assert len(err.splitlines()) == 1


def test_without_the_labs_the_chaos_group_is_left_out(no_labs: None) -> None:
    help_text = build_parser().format_help()
    assert "chaos" not in help_text.split("Commands:")[1].split("Conventions")[0]
    assert "dns serve" in help_text
