"""Benchmark: a ~6 MB wheel (sympy) through sentry's mirror against straight from the upstream, and cached.

Three test hosts on the test bridge: the upstream (test/support/upstream.py), a sentry
host deployed by the formula with mirror:url at it (the upstream's CA in
mirror:ca_certificates), and a client whose curl is given that CA. Each
round, interleaved so that drift in the machine's load hits all alike, the
client fetches with curl:

  direct   the wheel from the upstream itself (HTTPS)
  first    the same file through sentry's nginx while sentry has no copy: the
           server fetches it from the upstream and streams it on
  cached   again through nginx, now served from the serverdir

Between rounds the cached copy is removed from the serverdir, so that the next
"first" fetch is a first one again. Prints the medians and the ratios
first/direct (target <= 1.5) and first/cached (target >= 5); asserts nothing.

    .venv/bin/python test/bench/bench_mirror.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.cluster import no_route_out
from support.debs import build_deb
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION
from support.upstream import SIMPLE_JSON, Upstream, upstream_wheels

# Bridge host numbers away from the suite's (1-60), test_mirror's and the other benchmark's (100-112).
UPSTREAM_NUMBER, SENTRY_NUMBER, CLIENT_NUMBER = 120, 121, 122
SERVERDIR = "/var/lib/sentry/data"
PROJECT = "sympy"
CLIENT_CA = "/tmp/upstream-ca.pem"  # the client's curl is given the upstream's CA; its store stays Debian's


def fetch(client: TestHost, url: str) -> tuple[float, str]:
    """Seconds curl took for the whole body, and the body's sha256."""
    timed = client.run(["curl", "-fsS", "--cacert", CLIENT_CA, "-o", "/tmp/fetched", "-w", "%{time_total}", url]).stdout
    return float(timed), client.run(["sha256sum", "/tmp/fetched"]).stdout.split()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    deb = build_deb(DEFAULT_VERSION)
    (wheel,) = [wheel for wheel in upstream_wheels() if wheel.project == PROJECT]
    timings: dict[str, list[float]] = {"direct": [], "first": [], "cached": []}
    with (
        new_host("bench-up", address=host_address(UPSTREAM_NUMBER)) as upstream_host,
        new_host("bench-mirror", address=host_address(SENTRY_NUMBER)) as sentry,
        new_host("bench-client", address=host_address(CLIENT_NUMBER)) as client,
    ):
        for host in (upstream_host, sentry, client):
            no_route_out(host)
        upstream = Upstream(upstream_host, upstream_wheels()).start()
        client.path(CLIENT_CA).write_bytes(upstream.ca_pem)
        pillar = {
            "sentry": {
                "package": {"source": "deb", "deb": str(deb)},
                "server": {"root_password": "bench-root-pw"},
                "mirror": {"url": upstream.url, "ca_certificates": upstream.ca_certificates()},
            }
        }
        deployed = MasterlessSalt(sentry, pillar).apply("sentry")
        if not deployed.succeeded:
            raise SystemExit(f"deploy failed: {deployed.failed or deployed.errors}")
        page_url = f"http://{sentry.address}/root/pypi/+simple/{PROJECT}/"
        page = client.run(["curl", "-fsS", "-H", f"Accept: {SIMPLE_JSON}", page_url]).stdout
        (through_sentry,) = [
            urllib.parse.urljoin(page_url, entry["url"])
            for entry in json.loads(page)["files"]
            if entry["filename"] == wheel.filename
        ]
        direct = f"{upstream.base_url}packages/{wheel.filename}"
        stored = f"{SERVERDIR}/+files{urllib.parse.unquote(urllib.parse.urlsplit(through_sentry).path)}"
        for _ in range(rounds):
            for kind, url in (("direct", direct), ("first", through_sentry)):
                seconds, digest = fetch(client, url)
                if digest != wheel.sha256:
                    raise SystemExit(f"{kind} fetch of {url} is not the upstream's file")
                timings[kind].append(seconds)
            # The server renames its copy into place once the download is complete.
            sentry.wait_for(f"test -f '{stored}'", timeout=60)
            seconds, digest = fetch(client, through_sentry)
            if digest != wheel.sha256:
                raise SystemExit(f"cached fetch of {through_sentry} is not the upstream's file")
            timings["cached"].append(seconds)
            sentry.run(["rm", stored])  # the next round's "first" fetch finds no copy
        if upstream.downloads(wheel.filename) != 2 * rounds:
            raise SystemExit("not every first fetch through sentry reached the upstream: the ratios would lie")

    medians = {kind: statistics.median(values) for kind, values in timings.items()}
    print(f"{wheel.filename}: {wheel.path.stat().st_size / 1e6:.1f} MB, {rounds} rounds, curl on a client host")
    for kind, values in timings.items():
        print(f"  {kind:7} median {medians[kind] * 1000:7.1f} ms  {sorted(round(v * 1000, 1) for v in values)}")
    first, direct, cached = medians["first"], medians["direct"], medians["cached"]
    print(f"ratio first through sentry / direct from upstream: {first / direct:.2f} (target <= 1.5)")
    print(f"ratio first / cached through sentry: {first / cached:.1f} (target >= 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
