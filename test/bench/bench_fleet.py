"""Benchmark: ``state.apply sentry`` from one master on ten hosts against one host (issue 14).

A salt-master on the test bridge (pytest-salt-factories, as test_fleet.py)
and minions in test hosts, all on Salt 3008. First one minion, then ten, each
on fresh hosts: the wall time of the first ``salt ... state.apply sentry``
(the deb installed, the server initialised and started, nginx set up) and
of a second one (nothing to change), and the master's peak memory (the RSS
of all its processes, sampled every 0.2 s) during each. Prints ten / one.
Goal: ten within 4 x one on a 2-core machine. Asserts nothing.

    .venv/bin/pytest -p no:cacheprovider -s test/bench/bench_fleet.py   (make bench-fleet)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
from support.cluster import SaltCluster, changed, failed

FIRST_HOST_NUMBER = 150  # the bench's own bridge addresses: the suite's are 1-60


def pillar(deb, number: int) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": f"Bench-fleet-pw-{number}", "offline_mode": True},
        }
    }


class PeakMemory:
    """The largest RSS sum of a process and all its descendants seen while in the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak = psutil.Process(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process in (self.root, *self.root.children(recursive=True)):
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def timed_apply(cluster: SaltCluster, minions: list[str]) -> tuple[float, int, dict]:
    """Seconds, the master's peak RSS and the results of one ``state.apply sentry`` on ``minions``."""
    with PeakMemory(cluster.master.pid) as memory:
        started = time.monotonic()
        results = cluster.apply(",".join(minions), "sentry", tgt_type="list")
        seconds = time.monotonic() - started
    return seconds, memory.peak, results


def measure(salt_factories, deb, workdir: Path, count: int) -> dict:
    """``workdir``: short (the master's socket paths lie below it)."""
    minions = [f"bench-fleet-{number:02d}" for number in range(1, count + 1)]
    master_id = f"bench-fleet-{count}"
    with SaltCluster(salt_factories, workdir, master_id=master_id, first_host_number=FIRST_HOST_NUMBER) as c:
        c.add_minions({minion: pillar(deb, number) for number, minion in enumerate(minions, start=1)})
        first, first_peak, results = timed_apply(c, minions)
        bad = {minion: failed(states) for minion, states in results.items() if failed(states)}
        if bad:
            raise SystemExit(f"first apply on {count} failed: {bad}")
        again, again_peak, results = timed_apply(c, minions)
        changes = {minion: changed(states) for minion, states in results.items() if changed(states)}
    print(
        f"{count:2d} host(s): first apply {first:.1f} s (master peak {first_peak / 2**20:.0f} MiB), second "
        f"{again:.1f} s (peak {again_peak / 2**20:.0f} MiB){'; CHANGED ' + str(changes) if changes else ''}",
        flush=True,
    )
    return {"first": first, "again": again, "peak": max(first_peak, again_peak)}


def test_bench_ten_hosts_against_one(salt_factories, sentry_deb, tmp_path_factory):
    one = measure(salt_factories, sentry_deb, tmp_path_factory.mktemp("f1"), 1)
    ten = measure(salt_factories, sentry_deb, tmp_path_factory.mktemp("f10"), 10)
    print(
        f"ten / one: first apply x{ten['first'] / one['first']:.2f}, second x{ten['again'] / one['again']:.2f} "
        f"(goal: <= 4 on 2 cores); master's peak memory {one['peak'] / 2**20:.0f} MiB with one, "
        f"{ten['peak'] / 2**20:.0f} MiB with ten",
        flush=True,
    )
