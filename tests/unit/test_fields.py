"""netkit.base.fields: one set of value parsers for every loader and flag, one rule for types
(YAML's; text only where a flag may give it), one wording, every problem kept."""

from __future__ import annotations

from typing import Any

import pytest

from netkit.base.fields import (
    ConfigError,
    Errors,
    boolean,
    bounds,
    integer,
    ip,
    list_of,
    nonempty_str,
    number,
    one_of,
    optional,
    unknown_keys,
)


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (integer(1, 4094), True, "True is not an integer"),  # YAML's yes is no number
        (integer(1, 4094), "5", "'5' is not an integer"),  # a file's text is not a number
        (integer(1, 4094), 4095, "4095 is out of range: must be between 1 and 4094"),
        (integer(0), -1, "-1 is out of range: must be at least 0"),
        (integer(1, (1 << 32) - 1), 0, "0 is out of range: must be between 1 and 4294967295"),
        (integer(1, 9, text=True), "x", "'x' is not an integer"),
        (number(0, 600, lo_open=True), 0, "0 is out of range: must be above 0 and at most 600"),
        (number(0.05, 60), 0.01, "0.01 is out of range: must be between 0.05 and 60"),
        (number(), float("inf"), "inf is out of range"),
        (number(), "1.5", "'1.5' is not a number"),
        (number(), False, "False is not a number"),
        (boolean(), "yes", "'yes' is not true or false"),
        (boolean(text=True), "maybe", "'maybe' is not true or false"),
        (one_of("wire", "text"), "json", "'json' is not one of wire, text"),
        (one_of("info", "debug"), "INFO", "'INFO' is not one of info, debug"),
        (nonempty_str, "", "'' is not a non-empty string"),
        (ip(), "x", "'x' is not an IP address"),
        (ip(4), "2001:db8::1", "'2001:db8::1' is not an IPv4 address"),
        (ip(6), 5, "5 is not an IPv6 address"),
        (list_of(integer()), "1", "'1' is not a list"),
    ],
)
def test_what_each_parser_refuses_and_how_it_says_so(parse: Any, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(value)
    assert str(info.value).startswith(message), str(info.value)


def test_what_each_parser_accepts() -> None:
    assert integer(1, 9, text=True)(" 7 ") == 7 and integer()(-3) == -3
    assert number(text=True)("0.25") == 0.25 and number(0, 1)(1) == 1.0
    assert [boolean(text=True)(t) for t in ("yes", "Off", "1", "false")] == [True, False, True, False]
    assert one_of("info", "debug", fold_case=True)("INFO") == "info"
    assert ip()("2001:DB8::0:1") == "2001:db8::1" and ip(4)("198.18.0.1") == "198.18.0.1"
    assert list_of(integer(), single=True)([1, 2]) == (1, 2)
    assert list_of(nonempty_str, single=True)("a") == ("a",)
    assert optional(integer())(None) is None and optional(integer())(3) == 3
    assert bounds(None, 5) == "at most 5" and bounds(0.5, None, lo_open=True) == "above 0.5"


def test_errors_keep_every_problem_with_its_path() -> None:
    err = Errors()
    assert err.check("a.vni", integer(1, 10), 11, None) is None
    assert err.check("a.mtu", integer(68, 9000), 1500, None) == 1500

    def nested(raw: dict[str, Any]) -> int:
        raise ConfigError([f"b.{k}: bad" for k in raw])

    assert err.collect(nested, {"x": 1, "y": 2}, default=0) == 0
    assert err.check("c", nested, {"z": 3}, -1) == -1  # a nested validator's paths are its own
    unknown_keys({"name": 1, "colour": 2}, ("name", "vni"), "networks[0]", err)
    unknown_keys(["turbo"], ["api"], "", err)
    assert err.items == [
        "a.vni: 11 is out of range: must be between 1 and 10",
        "b.x: bad",
        "b.y: bad",
        "b.z: bad",
        "networks[0].colour: unknown key (expected one of: name, vni)",
        "turbo: unknown key (expected one of: api)",
    ]
    with pytest.raises(ConfigError) as info:
        err.raise_if_any()
    assert info.value.errors == err.items and str(info.value).count("\n") == 5
    Errors().raise_if_any()  # nothing found: nothing raised
