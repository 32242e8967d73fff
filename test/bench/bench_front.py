"""Benchmark: a mirror's simple page and a release file under load, through the formula's nginx and front,
against the bare server process and against the nginx site devpi-gen-config writes (issue 15).

Two test hosts on the test bridge: an upstream (test/support/upstream.py) and a
sentry host deployed by the formula (root/pypi mirroring the upstream), with
sentry.front on the same host (port 8080, in front of the host's nginx) and,
on port 8081, devpi's own caching profile (nginx-devpi-caching.conf as
devpi-gen-config writes it for this server, only its port and cache folder
changed): the anchor to beat. Load: ApacheBench (this machine's ab, run in
the sentry host's network namespace, so on its loopback), 20 clients with
keep-alive for 15 s per row, sending pip's User-Agent (devpi's profile
caches only for installers).

Before the load, each says what it did with a page's second request: devpi's
profile keeps a page only from an answer the server fetched from the
upstream just then; the server marks every answer from its own copy
"Cache-Control: no-store" (devpi-server 6.20's mirror returns its fresh
cached links as stale), so once the server has the page (here: fetched
through sentry's nginx first, as on any busy server) devpi's profile keeps
nothing until the mirror's expiry. sentry's nginx keeps mirror pages
whatever that header says.

Rows: the simple page of six as HTML and as PEP 691 JSON (pip's own Accept),
and its release file. Prints requests per second, p99 latency and errors
per row, and the ratios against the bare server and against devpi's
profile. Asserts nothing (goals: pages through the front >= 10x the bare
server with a lower p99 and 0 errors; the file from disk ~30x).

    .venv/bin/python test/bench/bench_front.py [--seconds 15] [--clients 20]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.cluster import no_route_out
from support.debs import build_deb
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION
from support.server import devpi_profile
from support.upstream import SIMPLE_JSON, Upstream, upstream_wheels

UPSTREAM_NUMBER, SENTRY_NUMBER = 125, 126  # away from the suite (1-60) and the other benchmarks
FRONT_PORT, DEVPI_PORT, SERVER_PORT = 8080, 8081, 3141
PAGE = "/root/pypi/+simple/six/"
PIP_AGENT = "pip/24.0 CPython/3.11"
PIP_ACCEPT = f"{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
TARGETS = {
    "server": f"127.0.0.1:{SERVER_PORT}",
    "devpi's nginx": f"127.0.0.1:{DEVPI_PORT}",
    "sentry's nginx": "127.0.0.1:80",
    "sentry's front": f"127.0.0.1:{FRONT_PORT}",
}


@dataclass
class Load:
    requests_per_second: float
    p99_ms: int
    errors: int


def ab(host: TestHost, url: str, seconds: int, clients: int, accept: str) -> Load:
    """ApacheBench against ``url`` from inside the host's network namespace (this machine's ab)."""
    argv = ["nsenter", "--target", str(host.init_pid), "--net", "ab", "-k", "-q", "-c", str(clients)]
    argv += ["-t", str(seconds), "-n", "100000000", "-H", f"User-Agent: {PIP_AGENT}", "-H", f"Accept: {accept}", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 120).stdout

    def number(pattern: str, default: str = "0") -> float:
        found = re.search(pattern, out, re.MULTILINE)
        return float(found.group(1) if found else default)

    errors = number(r"^Failed requests:\s+(\d+)") + number(r"^Non-2xx responses:\s+(\d+)")
    return Load(number(r"^Requests per second:\s+([\d.]+)"), int(number(r"^\s+99%\s+(\d+)")), int(errors))


def caching_profile(host: TestHost) -> None:
    """devpi-gen-config's caching nginx site for this server, on DEVPI_PORT with a cache folder of its own."""
    devpi_profile(
        host,
        "nginx-devpi-caching.conf",
        SERVER_PORT,
        DEVPI_PORT,
        lambda site: site.replace("proxy_cache_path /var/cache/nginx ", "proxy_cache_path /var/cache/devpi-profile "),
    )


def print_row(row: str, loads: dict[str, Load]) -> None:
    bare, devpi = loads["server"].requests_per_second, loads["devpi's nginx"].requests_per_second
    for label, (name, load) in zip([row] + [""] * len(loads), loads.items(), strict=False):
        print(
            f"{label:30} {name:16} {load.requests_per_second:9.0f} {load.p99_ms:7d} {load.errors:7d}"
            f" {load.requests_per_second / bare:9.2f} {load.requests_per_second / devpi:8.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("ab"):
        raise SystemExit("ab not found: script/bootstrap test installs apache2-utils")
    deb = build_deb(DEFAULT_VERSION)
    with (
        new_host("bench-front-up", address=host_address(UPSTREAM_NUMBER)) as upstream_host,
        new_host("bench-front", address=host_address(SENTRY_NUMBER)) as host,
    ):
        for each in (upstream_host, host):
            no_route_out(each)
        upstream = Upstream(upstream_host, upstream_wheels()).start()
        upstream.serve()
        pillar = {
            "sentry": {
                "package": {"source": "deb", "deb": str(deb)},
                "server": {"root_password": "bench-root-pw", "role": "primary"},
                "mirror": {"url": upstream.url, "ca_certificates": upstream.ca_certificates()},
                "front": {"master": "127.0.0.1:80", "port": FRONT_PORT},
            }
        }
        salt = MasterlessSalt(host, pillar)
        for sls in ("sentry", "sentry.front"):
            applied = salt.apply(sls)
            if not applied.succeeded:
                raise SystemExit(f"{sls} failed: {applied.failed or applied.errors}")
        caching_profile(host)
        page = host.run(["curl", "-fsS", f"http://127.0.0.1{PAGE}"]).stdout
        (relative,) = re.findall(r'href="\.\./\.\./(\+f/[^"#]+)', page)[:1]
        file_path = f"/root/pypi/{relative}"
        host.run(["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1{file_path}"])  # on disk from now on

        rows = {
            "page (HTML)": (PAGE, "text/html"),
            "page (PEP 691, pip's Accept)": (PAGE, PIP_ACCEPT),
            "release file": (file_path, "*/*"),
        }
        for name, where in TARGETS.items():  # what each says of its cache at a second request
            for _ in range(2):
                headers = host.run(
                    ["curl", "-sS", "-D-", "-o", "/dev/null", "-H", f"User-Agent: {PIP_AGENT}", f"http://{where}{PAGE}"]
                ).stdout
            said = re.findall(r"^(?:X-Cached|X-Sentry-Cache): (\S+)", headers, re.MULTILINE | re.IGNORECASE)
            print(f"{name}: a page's second request: {said[0] if said else 'not kept'}")
        print(f"\n{args.clients} clients, {args.seconds} s each, loopback of the sentry host\n")
        print(f"{'':30} {'via':16} {'req/s':>9} {'p99 ms':>7} {'errors':>7} {'x server':>9} {'x devpi':>8}")
        for row, (path, accept) in rows.items():
            loads = {
                name: ab(host, f"http://{where}{path}", args.seconds, args.clients, accept)
                for name, where in TARGETS.items()
            }
            print_row(row, loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
