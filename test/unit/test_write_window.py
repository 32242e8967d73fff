"""The upgrade tests' write window (support.client.write_window): writes that never come back are no window."""

from __future__ import annotations

import pytest
from support.client import write_window


def test_the_window_ends_at_the_first_write_acknowledged_after_the_last_refusal():
    writes = [(1.0, "a", True), (2.0, "b", False), (3.5, "c", False), (4.0, "d", True), (5.0, "e", True)]
    assert write_window(writes) == 2.0


def test_no_refusal_is_no_window():
    assert write_window([(1.0, "a", True), (2.0, "b", True)]) == 0.0


def test_writes_that_never_come_back_fail():
    # Before: the window was the span of refusals, 1.5 s here, and the tests' "outage > 0" passed.
    with pytest.raises(AssertionError, match="never came back"):
        write_window([(1.0, "a", True), (2.0, "b", False), (3.5, "c", False)])
