"""`netkit dns serve --check`: the configuration in effect as YAML that loads again; every problem
of a configuration at once; forwarding loops behind wildcard listen addresses; the help's own
example configuration is valid."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from dnscache.core.config import ServeConfig, load
from netkit.base.fields import ConfigError
from netkit.cli import main
from netkit.cli.dns import SERVE_HELP


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["dns", "serve", *args, "--check"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_prints_every_key_as_yaml_that_loads_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "dns.yaml"
    f.write_text(
        "listen: ['127.0.0.1:5353']\nzone: {cluster.local: ['127.0.0.1:5301']}\nprefetch_fraction: 0.3\n"
    )
    rc, out, err = check(capsys, "-f", str(f), "--upstream", "127.0.0.1:5300", "--cache-bytes", "64M")
    assert rc == 0, err
    shown = yaml.safe_load(out)
    assert set(shown) == {fld.name for fld in dataclasses.fields(ServeConfig)}
    assert shown["prefetch_fraction"] == 0.3 and shown["cache_bytes"] == 64 << 20  # a file-only key, a flag
    assert shown["zone"] == {"cluster.local.": ["127.0.0.1:5301"]}
    assert shown["metrics"] is None and shown["upstream"] == ["127.0.0.1:5300"]
    assert "None" not in out and "['" not in out  # YAML, not Python reprs
    again = tmp_path / "again.yaml"
    again.write_text(out)
    rc, out2, err = check(capsys, "-f", str(again))
    assert rc == 0 and out2 == out, err
    assert load(shown) == load(yaml.safe_load(out2))


def test_upstreams_from_resolv_conf_are_shown_by_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc_file = tmp_path / "resolv.conf"
    rc_file.write_text("nameserver 127.0.0.9\nsearch example.test\n")
    rc, out, err = check(capsys, "--listen", "127.0.0.1:5353", "--resolv-conf", str(rc_file))
    assert rc == 0, err
    assert yaml.safe_load(out)["upstream"] == ["127.0.0.9:53"]


def test_every_problem_of_a_configuration_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "listen: ['127.0.0.1:5353']\nupstream: ['127.0.0.1:5353']\ncache_size: 0\ncolour: blue\n"
        "min_ttl: 600\nmax_ttl: 60\nlog_level: verbose\n"
    )
    rc, out, err = check(capsys, "-f", str(f))
    assert rc == 2 and out == ""
    lines = err.splitlines()
    for expected in (
        f"netkit dns serve: {f}: cache_size: 0 is out of range: must be between 1 and 50000000",
        f"netkit dns serve: {f}: colour: unknown key",
        f"netkit dns serve: {f}: log_level: 'verbose' is not one of debug, info, warning, error",
        f"netkit dns serve: {f}: min_ttl: 600 is above max_ttl (60)",
        f"netkit dns serve: {f}: upstream: 127.0.0.1:5353 is one of our own listen addresses",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, err)
    assert len(lines) == 5, err


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [
        ("0.0.0.0:5353", "127.0.0.1:5353"),
        ("0.0.0.0:5353", "127.0.0.53:5353"),
        ("[::]:5353", "[::1]:5353"),
        ("127.0.0.1:5353", "0.0.0.0:5353"),
        ("127.0.0.1:53", "127.0.0.1"),
    ],
)
def test_a_loop_behind_a_wildcard_or_default_port_is_refused(listen: str, upstream: str) -> None:
    with pytest.raises(ConfigError, match="forwarding loop"):
        load({"listen": [listen], "upstream": [upstream]})


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [
        ("0.0.0.0:5353", "127.0.0.1:5300"),
        ("0.0.0.0:5353", "[::1]:5353"),
        ("127.0.0.1:5353", "127.0.0.2:5353"),
    ],
)
def test_not_a_loop(listen: str, upstream: str) -> None:
    load({"listen": [listen], "upstream": [upstream]})


def test_the_example_configuration_in_the_help_passes_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"\n\n((?:    \S.*\n)+)\nFlags override the file", SERVE_HELP)
    assert block is not None, "the YAML example of `netkit dns serve --help` moved"
    f = tmp_path / "example.yaml"
    f.write_text("\n".join(line[4:] for line in block.group(1).splitlines()) + "\n")
    rc, out, err = check(capsys, "-f", str(f))
    assert rc == 0, err
    assert yaml.safe_load(out)["zone"]["cluster.local."] == ["10.96.0.11:53"]


def test_unknown_flag_and_bad_value_show_the_subcommand_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["dns", "serve", "--listen", "127.0.0.1:5353", "--no-such-flag"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: netkit dns serve ") and "unrecognized arguments: --no-such-flag" in err
    with pytest.raises(SystemExit) as info:
        main(["dns", "restart", "--control", "/x", "--timeout", "-1"])
    assert info.value.code == 2 and "usage: netkit dns restart" in capsys.readouterr().err


def test_takeover_needs_a_control_socket_and_one_worker() -> None:
    with pytest.raises(ConfigError) as info:
        load({"listen": ["127.0.0.1:5399"], "upstream": ["127.0.0.1:53"], "takeover": True, "workers": 2})
    assert info.value.errors == [
        "config: takeover: needs control: the socket a predecessor hands its sockets over on",
        "config: takeover: works with workers: 1 only (workers is 2)",
    ]
    cfg = load(
        {"upstream": ["127.0.0.1:53"], "listen": ["127.0.0.1:5399"], "takeover": "yes", "control": "/c"}
    )
    assert cfg.takeover and cfg.ready_file is None and not cfg.keeper
    assert load({"listen": ["127.0.0.1:5399"], "upstream": ["127.0.0.1:53"], "keeper": "on"}).keeper


def test_the_cli_knows_the_handover_variable_without_importing_the_handover() -> None:
    from dnscache import handover
    from netkit.cli import dns

    assert dns.HANDOVER_ENV == handover.ENV
