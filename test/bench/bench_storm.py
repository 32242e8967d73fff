"""Benchmark: a CI storm, 30 pip installs at once of the same 20 packages, through the front of a master and
two replicas, against one install alone; and the same against devpi's own nginx profile on the master (issue 15).

Six test hosts on the test bridge: an upstream (test/support/upstream.py)
serving 20 generated projects (one 200 kB wheel each), a master whose
root/pypi mirrors it with ci/dev (bases root/pypi) on top, two replicas
following it, the front (sentry.front) before the three, and a client. On the
master, port 8081 serves the nginx site devpi-gen-config writes for it
(nginx-devpi-caching.conf; its port and cache folder changed): the anchor.

Each install is pip in the client (no local configuration, --no-cache-dir,
into a folder of its own) of the 20 projects from ci/dev. First one install
warms the mirror (its time is the first fetch from the upstream), then, for
the front, for the master's own nginx (no front) and for devpi's nginx: one
install alone, then 30 at once. Prints
the wall times, the failed installs, storm / alone, and how many requests for
release files and pages each node's nginx answered during the storm through
the front. Asserts nothing (goal: 0 failures).

    .venv/bin/python test/bench/bench_storm.py [--clients 30] [--projects 20]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_front import caching_profile
from support.client import PIP_VENV
from support.cluster import no_route_out
from support.debs import build_deb
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION
from support.upstream import LogTail, Upstream, read_wheel
from support.wheels import make_wheel

FIRST_NUMBER = 130  # 130-135: upstream, master, two replicas, front, client
NAMES = ("up", "master", "replica1", "replica2", "front", "client")
DEVPI_PORT = 8081
NGINX_LOG = "/var/log/nginx/access.log"
VIA_FRONT, VIA_NGINX, VIA_DEVPI = "sentry's front", "sentry's nginx", "devpi's nginx"


def storm(client: TestHost, index_url: str, projects: list[str], clients: int) -> tuple[float, int]:
    """Wall seconds for ``clients`` pip installs at once, and how many failed."""
    host = index_url.split("/")[2]
    installs = " ".join(
        f"(rm -rf /tmp/storm-{n}; PIP_CONFIG_FILE=/dev/null {PIP_VENV}/bin/pip install -q --no-cache-dir"
        f" --disable-pip-version-check --trusted-host {host} --index-url {index_url} --target /tmp/storm-{n}"
        f" {' '.join(projects)} >/tmp/storm-{n}.log 2>&1 || echo failed) &"
        for n in range(clients)
    )
    started = time.monotonic()
    ran = client.sh(f"{installs} wait", timeout=1800)
    return time.monotonic() - started, ran.stdout.count("failed")


def cpu_ticks() -> tuple[int, int]:
    """This machine's busy and total CPU ticks so far (/proc/stat: the test hosts share its CPUs)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def node_requests(log: LogTail) -> tuple[int, int]:
    """Requests for release files and for simple pages a node's nginx answered since ``log`` was made."""
    text = log.new()
    files = re.findall(r'"GET \S*/(?:\+|%2B)f/', text)  # pip quotes + as %2B
    return len(files), len(re.findall(r'"GET \S*/(?:\+|%2B)simple/', text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--projects", type=int, default=20)
    args = parser.parse_args()
    deb = build_deb(DEFAULT_VERSION)
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory() as folder:
        wheels = [
            read_wheel(make_wheel(Path(folder), f"storm-{n:02d}", "1.0", data=os.urandom(200_000)))
            for n in range(args.projects)
        ]
        projects = [wheel.project for wheel in wheels]
        hosts: dict[str, TestHost] = {}
        try:
            for number, name in enumerate(NAMES):
                hosts[name] = new_host(f"storm-{name}", address=host_address(FIRST_NUMBER + number)).start()
                no_route_out(hosts[name])
            upstream = Upstream(hosts["up"], wheels).start()
            upstream.serve()
            address = {name: host.address for name, host in hosts.items()}
            package = {"source": "deb", "deb": str(deb)}
            pillars = {
                "master": {
                    "package": package,
                    "server": {"root_password": "Storm-root-pw-1", "role": "primary", "secret": secret},
                    "mirror": {"url": upstream.url, "ca_certificates": upstream.ca_certificates()},
                    "nginx": {"replica_addresses": [address["replica1"], address["replica2"]]},
                    "bootstrap": {
                        "users": {"ci": {"password": "Storm-ci-pw-1"}},
                        "indexes": {"ci/dev": {"bases": ["root/pypi"]}},
                    },
                },
                **{
                    replica: {
                        "package": package,
                        "server": {"master_url": f"http://{address['master']}", "secret": secret},
                    }
                    for replica in ("replica1", "replica2")
                },
                "front": {
                    "front": {
                        "master": f"{address['master']}:80",
                        "replicas": [f"{address['replica1']}:80", f"{address['replica2']}:80"],
                    }
                },
            }
            for name in ("master", "replica1", "replica2", "front"):
                applied = MasterlessSalt(hosts[name], {"sentry": pillars[name]}).apply(
                    "sentry.front" if name == "front" else "sentry"
                )
                if not applied.succeeded:
                    raise SystemExit(f"{name}: {applied.failed or applied.errors}")
            caching_profile(hosts["master"])
            client = hosts["client"]
            client.sh(f"test -x {PIP_VENV}/bin/pip || /usr/bin/python3 -m venv {PIP_VENV}")

            front_url = f"http://{address['front']}/ci/dev/+simple/"
            devpi_url = f"http://{address['master']}:{DEVPI_PORT}/ci/dev/+simple/"
            first, failed = storm(client, front_url, projects, 1)
            print(f"\nall six hosts share this machine's {os.cpu_count()} CPUs")
            print(
                f"{args.projects} projects, first install (the mirror fetches the upstream): {first:.1f} s"
                f"{', FAILED' if failed else ''}"
            )
            print(
                f"\n{'via':16} {'one alone s':>12} {f'{args.clients} at once s':>14} {'failed':>7} {'storm/alone':>12}"
                f" {'CPU busy %':>9}"
            )
            storms: dict[str, float] = {}
            master_url = f"http://{address['master']}/ci/dev/+simple/"
            for name, url in (
                (VIA_FRONT, front_url),
                (VIA_NGINX, master_url),
                (VIA_DEVPI, devpi_url),
            ):
                alone, failed_alone = storm(client, url, projects, 1)
                logs = {node: LogTail(hosts[node], NGINX_LOG) for node in ("master", "replica1", "replica2")}
                busy_before, total_before = cpu_ticks()
                at_once, failed_storm = storm(client, url, projects, args.clients)
                busy_after, total_after = cpu_ticks()
                busy = 100 * (busy_after - busy_before) / max(total_after - total_before, 1)
                storms[name] = at_once
                print(
                    f"{name:16} {alone:12.1f} {at_once:14.1f} {failed_alone + failed_storm:7d} {at_once / alone:12.2f}"
                    f" {busy:9.0f}"
                )
                if name == VIA_FRONT:
                    spread = {node: node_requests(log) for node, log in logs.items()}
            print(
                f"\nthe storm's time, {VIA_FRONT} / {VIA_DEVPI}: {storms[VIA_FRONT] / storms[VIA_DEVPI]:.2f},"
                f" {VIA_NGINX} / {VIA_DEVPI}: {storms[VIA_NGINX] / storms[VIA_DEVPI]:.2f}"
            )
            print("\nduring the storm through the front, requests each node's nginx answered (files, pages):")
            for node, (files, pages) in spread.items():
                print(f"  {node:9} {files:6d} {pages:6d}")
        finally:
            for host in hosts.values():
                host.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
