"""script/test's time report (support/timing.py): nested steps counted once, shards merged, the closing count."""

from __future__ import annotations

import time

import pytest
from support import timing


def test_a_step_inside_another_counts_for_the_inner_one_only():
    figures = timing.Figures()
    with figures.step("minion start"):
        time.sleep(0.05)
        with figures.step("host start"):
            time.sleep(0.1)
    assert 0.1 <= figures.steps["host start"] < 0.15
    assert 0.05 <= figures.steps["minion start"] < 0.1


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="step kind 'boot'"), timing.Figures().step("boot"):
        pass


def test_the_report_merges_shards_and_ends_with_their_count():
    figures = timing.Figures()
    figures.record_test("test/test_a.py::test_one", 3.0)
    figures.record_test("test/test_a.py::test_one", 7.0, "passed")
    figures.record_test("test/test_b.py::test_two", 1.0, "failed")
    first = figures.snapshot(20.0, 0.5)
    second = {
        "wall": 30.0,
        "cpu_busy": None,
        "tests": {"test/test_c.py::test_three": 25.0},
        "outcomes": {"test/test_c.py::test_three": "skipped", "test/test_d.py::test_four": "error"},
        "steps": {"host start": 5.0},
    }
    text = timing.report([first, second], top=2)
    lines = text.splitlines()
    modules = lines[lines.index("slowest 2 modules (wall s):") + 1 :][:2]
    assert [line.split()[-1] for line in modules] == ["test/test_c.py", "test/test_a.py"]
    assert "    10.0  test/test_a.py" in modules[1]
    assert "     5.0   10.0 %  host start" in text  # 5 s of 20 + 30 s
    assert lines[-1] == "total: 1 passed, 2 failed, 1 skipped"
