"""Benchmark: a backup of 1,000 release files, the write pause it causes on the master, and its drill.

One test host runs a master (``server:role: primary``) with a user and two
indexes holding FILES uploaded wheels. A writer inside the host changes a
user's email over the API as fast as it can (each change is a committed
write) while ``sentry_admin.backup`` runs: once live (the default: the server
keeps serving) and once with ``live=False`` (its program stopped meanwhile).
The write pause is the longest time between two consecutive successful writes
inside the backup's window (a writer's normal gap is printed beside it). Then
``sentry_admin.verify_backup`` drills the newest backup. Prints the figures
measured in this one run; asserts nothing.

    .venv/bin/python test/bench/bench_backup.py [--files N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.client import upload_generated
from support.debs import build_deb
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION, REPO

ROOT_PASSWORD = "Bench-Backup-root-1"
PASSWORD = "Bench-Backup-pw-2"
INDEXES = ("alice/dev", "alice/prod")
VERSIONS_PER_PROJECT = 10
LOG = "/tmp/writes.jsonl"

# Runs inside the host on Debian's python3: log in as root once, then PATCH alice's email in a loop,
# one JSON line (start, end, ok) per write, until the file /tmp/writer.stop appears.
WRITER = r"""
import base64, json, os, time, urllib.request
BASE = "http://127.0.0.1:3141"
def req(method, path, body, auth=None):
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if auth:
        headers["X-Devpi-Auth"] = auth
    request = urllib.request.Request(BASE + path, json.dumps(body).encode(), headers, method=method)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)
def login():
    while True:
        try:
            token = req("POST", "/+login", {"user": "root", "password": os.environ["ROOT_PASSWORD"]})
            return base64.b64encode(f"root:{token['result']['password']}".encode()).decode()
        except Exception:
            time.sleep(0.05)
auth = login()
with open("LOG", "a") as log:
    number = 0
    while not os.path.exists("/tmp/writer.stop"):
        number += 1
        started, ok = time.time(), True
        try:
            req("PATCH", "/alice", {"email": f"alice{number}@example.org"}, auth)
        except Exception:
            ok = False
            time.sleep(0.05)
        log.write(json.dumps([started, time.time(), ok]) + "\n")
        log.flush()
""".replace("LOG", LOG)


def upload(salt: MasterlessSalt, files: int) -> float:
    """``files`` wheels over both indexes, VERSIONS_PER_PROJECT versions a project; returns the seconds."""
    return upload_generated(salt.host, files, INDEXES, VERSIONS_PER_PROJECT, "alice", PASSWORD)


def with_writer(salt: MasterlessSalt, *args: str) -> tuple[dict, dict]:
    """Run ``salt-call args`` while the writer writes; its result and the writes' figures in its window."""
    host = salt.host
    host.run(["rm", "-f", LOG, "/tmp/writer.stop"])
    writer = subprocess.Popen(
        host.command(["env", f"ROOT_PASSWORD={ROOT_PASSWORD}", "/usr/bin/python3", "-c", WRITER]),
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # a steady rate first
        started = time.time()
        ran = salt.call(*args)
        ended = time.time()
        time.sleep(2)
    finally:
        host.run(["touch", "/tmp/writer.stop"])
        writer.wait(30)
    writes = [json.loads(line) for line in host.path(LOG).read_text().splitlines()]
    done = [end for _start, end, ok in writes if ok]
    before = [b - a for a, b in itertools.pairwise(done) if b < started]
    inside = [end for end in done if started <= end <= ended]
    edges = [max([end for end in done if end < started], default=started), *inside]
    after = [end for end in done if end > ended][:1]
    gaps = [b - a for a, b in itertools.pairwise(edges + after)]
    figures = {
        "writes_in_window": len(inside),
        "failed_in_window": sum(1 for start, _end, ok in writes if not ok and started <= start <= ended),
        "longest_gap": max(gaps, default=ended - started),
        "usual_gap": sorted(before)[len(before) // 2] if before else float("nan"),
        "window": ended - started,
    }
    return json.loads(ran.stdout)["local"], figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    files = parser.parse_args().files
    deb = build_deb(DEFAULT_VERSION)
    pillar = {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True, "role": "primary"},
            "bootstrap": {
                "users": {"alice": {"password": PASSWORD}},
                "indexes": {"alice/dev": {"bases": []}, "alice/prod": {"bases": ["alice/dev"], "volatile": False}},
            },
            "backup": {
                "enabled": True,
                "schedule": "",
                "drill_schedule": "",
            },
            "cron": {"salt_call": str(REPO / ".venv" / "bin" / "salt-call")},
        }
    }
    with new_host("bench-backup") as host:
        salt = MasterlessSalt(host, pillar)
        deployed = salt.apply("sentry")
        if not deployed.succeeded:
            raise SystemExit(f"deploy failed: {deployed.failed or deployed.errors}")
        uploaded = upload(salt, files)
        live, live_writes = with_writer(salt, "sentry_admin.backup")
        stopped, stopped_writes = with_writer(salt, "sentry_admin.backup", "live=False")
        drill_started = time.monotonic()
        drilled = json.loads(salt.call("sentry_admin.verify_backup").stdout)["local"]
        drill_wall = time.monotonic() - drill_started
    print(f"release files: {live['counts']['files']} (uploaded in {uploaded:.0f} s)")
    for name, made, writes in (("live", live, live_writes), ("stopped", stopped, stopped_writes)):
        print(
            f"backup {name}: {made['seconds']:.2f} s; writes meanwhile: {writes['writes_in_window']} done, "
            f"{writes['failed_in_window']} failed; longest gap between writes {writes['longest_gap']:.2f} s "
            f"(usual {writes['usual_gap'] * 1000:.0f} ms); recorded write pause {made['write_pause_seconds']:.2f} s"
        )
    print(f"drill: {drilled['seconds']:.2f} s (salt-call {drill_wall:.1f} s), steps (s): {drilled['steps']}")
    print(f"ratio drill / live backup: {drilled['seconds'] / live['seconds']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
