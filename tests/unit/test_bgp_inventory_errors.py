"""Every problem of a BGP inventory in one run, each with its field: node-level errors do not
hide the rules across nodes, and those do not hide the policy's (failure-domain labels)."""

from __future__ import annotations

import pytest

from bgp.core.inventory import InventoryError, load_inventory

INVENTORY = """\
asn: 64512
policy: {failure_domain: zone, redundancy: 2}
nodes:
  - {name: a, address: 198.18.0.1, labels: {zone: z1}}
  - {name: b, address: 198.18.0.2, router_id: 198.18.0.1, labels: {zone: z2}}
  - {name: c, address: 198.18.0.3}
  - {name: d, address: 198.18.0.4, labels: {zone: z2}, prefixes: [198.19.0.1/24]}
  - {name: e, address: 198.18.0.2, labels: {zone: z1}}
"""


def test_every_problem_at_once() -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(INVENTORY, "inv.yaml")
    errors = info.value.errors
    assert any(e.startswith("nodes[d].prefixes[0]: '198.19.0.1/24' is not a network") for e in errors), errors
    assert "nodes[b].router_id: duplicate router id 198.18.0.1 (also a)" in errors
    assert "nodes[e]: duplicate address 198.18.0.2 (also b)" in errors
    assert "nodes[c].labels.zone: missing; reflector candidates need their failure domain" in errors
    assert len(errors) == 4, errors


def test_dedicated_without_marks_and_unlabelled_candidates_together() -> None:
    text = INVENTORY.replace("redundancy: 2}", "redundancy: 2, mode: dedicated, levels: 3}")
    with pytest.raises(InventoryError) as info:
        load_inventory(text)
    errors = info.value.errors
    assert "policy.levels: 3 is out of range: must be between 1 and 2" in errors
    assert "policy.mode: dedicated needs nodes marked reflector: true" in errors


def test_every_unlabelled_candidate_is_named() -> None:
    text = "asn: 1\nnodes:\n" + "".join(f"  - {{name: n{i}, address: 198.18.0.{i}}}\n" for i in range(1, 4))
    with pytest.raises(InventoryError) as info:
        load_inventory(text)
    assert [e.split(".")[0] for e in info.value.errors] == ["nodes[n1]", "nodes[n2]", "nodes[n3]"]
