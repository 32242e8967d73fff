"""Benchmark: an idempotent re-apply of `sentry` against salt-call's own floor.

Prints the median time of `salt-call --local state.apply sentry` on a deployed
host (zero changes) divided by the median of applying an empty state (one
test.nop) on the same host, both measured in this one run. Target: at most 1.5.

    .venv/bin/python test/bench/bench_reapply.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.debs import build_deb
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION

EMPTY_STATES = "/srv/bench-states"


def timed(salt: MasterlessSalt, sls: str) -> float:
    started = time.perf_counter()
    run = salt.apply(sls)
    elapsed = time.perf_counter() - started
    if not run.succeeded or run.changed:
        raise SystemExit(f"{sls} did not apply cleanly: {run.failed or run.changed or run.errors}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    deb = build_deb(DEFAULT_VERSION)
    pillar = {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": "bench-root-pw", "offline_mode": True},
        }
    }
    with new_host("bench") as host:
        # The floor: salt-call's start-up, pillar and one state that does nothing.
        host.sh(f"mkdir -p {EMPTY_STATES} && printf 'nothing:\\n  test.nop: []\\n' > {EMPTY_STATES}/empty.sls")
        salt = MasterlessSalt(host, pillar, extra_file_roots=(EMPTY_STATES,))
        first = salt.apply("sentry")
        if not first.succeeded:
            raise SystemExit(f"deploy failed: {first.failed or first.errors}")
        reapply, empty = [], []
        for _ in range(rounds):  # interleaved, so drift in the machine's load hits both alike
            reapply.append(timed(salt, "sentry"))
            empty.append(timed(salt, "empty"))
    reapply_median, empty_median = statistics.median(reapply), statistics.median(empty)
    print(f"rounds: {rounds}")
    print(f"re-apply of sentry (zero changes): median {reapply_median:.2f} s  {sorted(round(t, 2) for t in reapply)}")
    print(f"apply of an empty state:           median {empty_median:.2f} s  {sorted(round(t, 2) for t in empty)}")
    print(f"ratio re-apply / empty: {reapply_median / empty_median:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
