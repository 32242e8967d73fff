"""Benchmark: the health check's share of a 1,000-file master upgrade.

One test host with the older sentry deb from a local apt repository, a user
and two indexes holding FILES uploaded wheels (PROJECTS projects), is
upgraded to the newest deb with ``sentry_upgrade.master``. Prints the
upgrade's steps, the health check's seconds (and devpi-fsck's part of them)
and the ratio health check / upgrade (the sum of its steps), measured in
this one run. Goal: at most 0.10. Asserts nothing.

    .venv/bin/python test/bench/bench_health.py [--files N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.aptrepo import make_apt_repo, use_apt_repo
from support.client import upload_generated
from support.debs import build_deb, known_versions
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION, REPO

PASSWORD = "Bench-Health-pw-1"
INDEXES = ("alice/dev", "alice/prod")
VERSIONS_PER_PROJECT = 10


def deb_version(deb: Path) -> str:
    return deb.name.split("_")[1]


def upload(salt: MasterlessSalt, files: int) -> float:
    """``files`` wheels over both indexes, VERSIONS_PER_PROJECT versions a project; returns the seconds."""
    return upload_generated(salt.host, files, INDEXES, VERSIONS_PER_PROJECT, "alice", PASSWORD)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    files = parser.parse_args().files
    new_deb = build_deb(DEFAULT_VERSION)
    old_deb = build_deb(next(v for v in known_versions() if v != DEFAULT_VERSION))
    repo = make_apt_repo(REPO / "build" / "apt-bench-health", [new_deb, old_deb])
    pillar = {
        "sentry": {
            "package": {"source": "repo", "version": deb_version(old_deb)},
            "server": {"root_password": "bench-root-pw", "offline_mode": True},
            "bootstrap": {
                "users": {"alice": {"password": PASSWORD}},
                "indexes": {"alice/dev": {"bases": []}, "alice/prod": {"bases": ["alice/dev"], "volatile": False}},
            },
        }
    }
    with new_host("bench-health") as host:
        use_apt_repo(host, repo)
        salt = MasterlessSalt(host, pillar)
        deployed = salt.apply("sentry")
        if not deployed.succeeded:
            raise SystemExit(f"deploy failed: {deployed.failed or deployed.errors}")
        uploaded = upload(salt, files)
        started = time.monotonic()
        ran = salt.call("sentry_upgrade.master", deb_version(new_deb), "refresh=False", check=False)
        wall = time.monotonic() - started
        if ran.returncode != 0:
            raise SystemExit(f"the upgrade failed:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}")
        result = json.loads(ran.stdout)["local"]
    steps, health = result["steps"], result["health"]
    upgrade = sum(steps.values())
    print(f"release files: {health['files']} in {health['projects']} projects (uploaded in {uploaded:.0f} s)")
    print(f"upgrade {deb_version(old_deb)} -> {deb_version(new_deb)}: {upgrade:.1f} s (salt-call: {wall:.1f} s)")
    print(f"steps (s): {steps}")
    print(f"health check: {steps['health check']:.2f} s, of which devpi-fsck {health['fsck_seconds']:.2f} s")
    print(f"ratio health check / upgrade: {steps['health check'] / upgrade:.3f} (goal <= 0.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
