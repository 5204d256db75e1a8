"""Bailiwick scrubbing: poisoning attempts are dropped, legitimate chains kept."""

from __future__ import annotations

import dns.message

from dnscache.core.scrub import scrub
from dnscache.core.wire import name_from_text, parse_message
from tests.unit.test_cache_rules import reply


def scrubbed(buf: bytes, zone: str) -> tuple[dns.message.Message, int]:
    res = scrub(buf, parse_message(buf), name_from_text(zone))
    return dns.message.from_wire(res.wire), res.dropped


def test_clean_reply_is_returned_untouched() -> None:
    buf = reply("a.cluster.local", "A", "a.cluster.local. 5 IN A 198.18.0.1")
    res = scrub(buf, parse_message(buf), name_from_text("cluster.local"))
    assert res.wire is buf and res.dropped == 0


def test_out_of_zone_records_are_dropped_everywhere() -> None:
    buf = reply(
        "a.cluster.local",
        "A",
        "a.cluster.local. 5 IN A 198.18.0.1",
        "victim.example.com. 86400 IN A 198.18.6.6",
        authority=(
            "example.com. 86400 IN NS evil.attacker.test.",
            "cluster.local. 5 IN NS ns.cluster.local.",
        ),
        additional=("evil.attacker.test. 86400 IN A 198.18.6.6", "ns.cluster.local. 5 IN A 198.18.0.53"),
    )
    m, dropped = scrubbed(buf, "cluster.local")
    assert dropped == 3
    names = {r.name.to_text() for section in (m.answer, m.authority, m.additional) for r in section}
    assert names == {"a.cluster.local.", "cluster.local.", "ns.cluster.local."}


def test_answers_off_the_cname_chain_are_dropped() -> None:
    buf = reply(
        "www.example.test",
        "A",
        "www.example.test. 60 IN CNAME web.example.test.",
        "web.example.test. 60 IN A 198.18.0.1",
        "other.example.test. 60 IN A 198.18.6.6",
    )
    m, dropped = scrubbed(buf, ".")
    assert dropped == 1 and [r.name.to_text() for r in m.answer] == ["www.example.test.", "web.example.test."]


def test_chain_leaving_the_stub_zone_stops_there() -> None:
    buf = reply(
        "svc.cluster.local",
        "A",
        "svc.cluster.local. 5 IN CNAME target.example.com.",
        "target.example.com. 5 IN A 198.18.6.6",
    )
    m, dropped = scrubbed(buf, "cluster.local")
    assert dropped == 1 and [r.name.to_text() for r in m.answer] == ["svc.cluster.local."]


def test_root_zone_upstreams_may_answer_anything_on_the_chain() -> None:
    buf = reply(
        "svc.cluster.local",
        "A",
        "svc.cluster.local. 5 IN CNAME target.example.com.",
        "target.example.com. 5 IN A 198.18.6.6",
    )
    _, dropped = scrubbed(buf, ".")
    assert dropped == 0
