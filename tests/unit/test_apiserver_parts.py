"""The lab API server's pure parts: label and field selectors in their query-string form, JSON
merge patch and JSON patch, printer-column JSONPath and ages as kube-apiserver prints them."""

from __future__ import annotations

from typing import Any

import pytest

from labs.apiserver import jsonpatch
from labs.apiserver.server import fields_match, selector_matches
from labs.apiserver.tables import human_duration, jsonpath

LABELS = {"app": "dns", "tier": "node", "zone": "a"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=dns", True),
        ("app==dns,tier=node", True),
        ("app!=dns", False),
        ("app=web", False),
        ("zone in (a,b)", True),
        ("zone in (b, c)", False),
        ("zone notin (b,c),app", True),
        ("zone notin (a)", False),
        ("missing notin (a)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert selector_matches(selector, LABELS) is expected


def test_field_selectors() -> None:
    event = {
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "L2Network", "name": "blue"},
    }
    assert fields_match("involvedObject.kind=L2Network,involvedObject.name=blue", event)
    assert not fields_match("involvedObject.name!=blue", event)
    assert fields_match("metadata.namespace==default", event) and not fields_match("metadata.name=e2", event)


def test_merge_patch() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}
    assert jsonpatch.merge(doc, {"a": {"b": None, "d": 3}, "l": [3], "k": None}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}  # not changed in place


def test_json_patch() -> None:
    doc: dict[str, Any] = {"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": 1}}
    out = jsonpatch.apply(
        doc,
        [
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "c"},
            {"op": "replace", "path": "/spec/x", "value": 2},
            {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
            {"op": "move", "from": "/spec/y", "path": "/spec/z"},
            {"op": "test", "path": "/spec/z", "value": 2},
            {"op": "add", "path": "/metadata/labels~1x", "value": "1"},
        ],
    )
    assert out == {"metadata": {"finalizers": ["b", "c"], "labels/x": "1"}, "spec": {"x": 2, "z": 2}}
    for bad, message in (
        ([{"op": "remove", "path": "/nope"}], "does not exist"),
        ([{"op": "test", "path": "/spec/x", "value": 9}], "test failed"),
        ([{"op": "fly", "path": "/spec"}], "unknown operation"),
        ({"op": "add"}, "a list of operations"),
        ([{"op": "add", "path": "spec"}], "does not start with /"),
    ):
        with pytest.raises(jsonpatch.PatchError, match=message):
            jsonpatch.apply(doc, bad)
    assert doc["spec"] == {"x": 1}  # the whole patch or nothing


def test_printer_column_paths_and_ages() -> None:
    obj = {
        "spec": {"vni": 100},
        "status": {
            "conditions": [{"type": "Degraded", "status": "False"}, {"type": "Ready", "status": "True"}]
        },
    }
    assert jsonpath(obj, ".spec.vni") == 100
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert jsonpath(obj, ".status.conditions[0].type") == "Degraded"
    assert jsonpath(obj, ".spec.vlan") is None
    ages = [
        human_duration(s)
        for s in (0, 45, 130, 600, 7200, 4 * 3600 + 300, 30 * 3600, 3 * 86400 + 7200, 40 * 86400, 800 * 86400)
    ]
    assert ages == ["0s", "45s", "2m10s", "10m", "120m", "4h5m", "30h", "3d2h", "40d", "2y"]
