"""Where a test run's time goes: seconds per test, per module, and per kind of step waited on.

Support code marks the steps it waits on (``with step("host start"):``);
conftest records every test's wall seconds and outcome. Under ``script/test``
each shard writes its figures as JSON to $SENTRY_TEST_TIMING and script/test
prints one report of them all (``python test/support/timing.py FILE...``);
a run of pytest alone prints its own at the end.

A step inside another counts for the inner one only: a minion's start holds
its host's start, and the two are not counted twice.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

# The kinds of step, in the report's order; anything else is "other" (tests' own work).
STEP_KINDS = (
    "host start",
    "salt-master start",
    "minion start",
    "deploy (state.apply)",
    "orchestrate (salt-run)",
    "dpkg / apt",
    "server start",
    "deb build",
    "host root build",
)


class Figures:
    """One run's seconds per step kind and per test, and each test's outcome."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = defaultdict(float)
        self.tests: dict[str, float] = defaultdict(float)
        self.outcomes: dict[str, str] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def step(self, kind: str) -> Iterator[None]:
        """Count the block's wall seconds for ``kind``, less what steps inside it counted."""
        if kind not in STEP_KINDS:
            raise ValueError(f"step kind {kind!r}: one of {', '.join(STEP_KINDS)}")
        stack = self._local.__dict__.setdefault("stack", [])
        inner = [0.0]  # seconds the steps inside this one took
        stack.append(inner)
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            stack.pop()
            if stack:
                stack[-1][0] += elapsed
            with self._lock:
                self.steps[kind] += elapsed - inner[0]

    def record_test(self, nodeid: str, seconds: float, outcome: str | None = None) -> None:
        """A test phase's seconds (setup, call and teardown add up); ``outcome`` as pytest's summary counts it."""
        self.tests[nodeid] += seconds
        if outcome:
            self.outcomes[nodeid] = outcome

    def snapshot(self, wall: float, cpu_busy: float | None) -> dict:
        """The run's figures: wall seconds, the machine's CPU busy share meanwhile, tests and steps."""
        return {"wall": wall, "cpu_busy": cpu_busy, "tests": self.tests, "outcomes": self.outcomes, "steps": self.steps}


# This process's run: support code marks its steps with ``step``, conftest records the tests.
RUN = Figures()
step = RUN.step


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if not before or not after or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def report(runs: list[dict], top: int = 15) -> str:
    """The slowest modules and tests, and each step kind's share of the runs' wall time, as text."""
    tests: dict[str, float] = defaultdict(float)
    steps: dict[str, float] = defaultdict(float)
    outcomes: dict[str, str] = {}
    for run in runs:
        for nodeid, seconds in run["tests"].items():
            tests[nodeid] += seconds
        for kind, seconds in run["steps"].items():
            steps[kind] += seconds
        outcomes.update(run["outcomes"])
    modules: dict[str, float] = defaultdict(float)
    for nodeid, seconds in tests.items():
        modules[nodeid.split("::", 1)[0]] += seconds
    walls = [run["wall"] for run in runs]
    wall_sum = sum(walls) or 1.0
    lines = [f"===== where the time went: {len(runs)} run(s), wall {', '.join(f'{w:.0f} s' for w in walls)} ====="]
    busy = [f"{run['cpu_busy'] * 100:.0f} %" for run in runs if run.get("cpu_busy") is not None]
    if busy:
        lines.append(f"machine CPU busy during each run: {', '.join(busy)}")
    lines.append(f"slowest {top} modules (wall s):")
    lines += [f"  {seconds:8.1f}  {name}" for name, seconds in sorted(modules.items(), key=lambda i: -i[1])[:top]]
    lines.append(f"slowest {top} tests (wall s, setup to teardown):")
    lines += [f"  {seconds:8.1f}  {name}" for name, seconds in sorted(tests.items(), key=lambda i: -i[1])[:top]]
    lines.append("waiting on each kind of step (s, share of the runs' summed wall time):")
    for kind in STEP_KINDS:
        lines.append(f"  {steps.get(kind, 0.0):8.1f}  {steps.get(kind, 0.0) / wall_sum * 100:5.1f} %  {kind}")
    other = wall_sum - sum(steps.values())
    lines.append(f"  {other:8.1f}  {other / wall_sum * 100:5.1f} %  everything else (the tests' own work, pytest)")
    counts = defaultdict(int)
    for outcome in outcomes.values():
        counts[outcome] += 1
    # Errors (a fixture's setup or teardown failing) count as failed: the line pytest's summary closes on.
    summary = f"{counts['passed']} passed, {counts['failed'] + counts['error']} failed"
    if counts["skipped"]:
        summary += f", {counts['skipped']} skipped"
    lines.append(f"total: {summary}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report([json.loads(Path(name).read_text()) for name in sys.argv[1:]]))
