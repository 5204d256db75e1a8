"""Conditions per the API conventions: lastTransitionTime moves only with the status, one
condition per type, setting what is already there changes nothing (a controller restart with
unchanged inputs writes nothing)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.control.core.conditions import DEGRADED, READY, find, is_true, set_condition

T0, T1, T2 = "2026-12-06T10:00:00Z", "2026-12-06T10:05:00Z", "2026-12-06T10:09:00Z"


def test_transition_time_moves_only_with_the_status() -> None:
    c = set_condition([], READY, "False", "Progressing", "2 of 3 nodes", generation=1, now=T0)
    c = set_condition(c, READY, "False", "Progressing", "1 of 3 nodes", generation=1, now=T1)
    assert find(c, READY) == {
        "type": READY,
        "status": "False",
        "observedGeneration": 1,
        "lastTransitionTime": T0,  # the status did not change
        "reason": "Progressing",
        "message": "1 of 3 nodes",
    }
    c = set_condition(c, READY, "True", "AllNodesReady", "3 of 3 nodes", generation=2, now=T2)
    assert find(c, READY)["lastTransitionTime"] == T2  # type: ignore[index]
    assert is_true(c, READY) and is_true(c, READY, generation=2) and not is_true(c, READY, generation=3)
    assert not is_true(c, DEGRADED)


def test_bad_status_or_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="not True, False or Unknown"):
        set_condition([], READY, "Yes", "Done", "", generation=1, now=T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], READY, "True", "all nodes ready", "", generation=1, now=T0)


steps = st.lists(
    st.tuples(
        st.sampled_from([READY, DEGRADED, "Progressing"]),
        st.sampled_from(["True", "False", "Unknown"]),
        st.sampled_from(["Applied", "Conflict", "RolledBack"]),
        st.integers(1, 4),
        st.sampled_from([T0, T1, T2]),
    ),
    max_size=30,
)


@given(steps)
def test_one_per_type_and_setting_it_again_changes_nothing(seq: list[tuple[Any, Any, str, int, str]]) -> None:
    conditions: list[dict[str, Any]] = []
    for type_, status, reason, generation, now in seq:
        before = find(conditions, type_)
        conditions = set_condition(conditions, type_, status, reason, "m", generation=generation, now=now)
        after = find(conditions, type_)
        assert after is not None and after["status"] == status and after["observedGeneration"] == generation
        if before is not None and before["status"] == status:
            assert after["lastTransitionTime"] == before["lastTransitionTime"]
        again = set_condition(conditions, type_, status, reason, "m", generation=generation, now=T2)
        assert again == conditions
    types = [c["type"] for c in conditions]
    assert len(types) == len(set(types))
