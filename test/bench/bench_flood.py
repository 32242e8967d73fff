"""Benchmark: hostile traffic (issue 28). A login flood against reads of a private page, and reads under
auth:lockdown with a password, with a token and without lockdown.

Three test hosts on the test bridge: the sentry host (deployed by the formula,
sentry.front on port 8080 in front of its nginx, devpi-gen-config's nginx
site on port 8081), a flooding host and a reading host. Load is this
machine's ab, run in a host's network namespace.

Flood table, one row per way in: devpi bare (the server's port, flood and
reader on the sentry host's loopback: nothing else reaches it), devpi's nginx
profile, sentry's node, sentry's front. Per row two phases of --seconds:
the reader alone (4 clients reading alice/dev's simple page), then the
reader while 60 clients POST a wrong root password to /+login. Prints the
reader's p50 and p99, its reads and failures, and what the flood got:
answers the server gave (401: a password hash each) and answers nginx gave
itself (429), from nginx's access log. On a machine with two CPUs or more the
flooder gets CPUs of its own (sched affinity) and the sentry host and the
reader the others: on the test bridge the flood's load generator would
otherwise take the server's CPU, which an attacker elsewhere cannot.

Lockdown table: alice/dev's simple page and its release file, 10 clients
for --seconds each, the reader's address in nginx:limits:exempt (a CI
fleet's), with: lockdown off (the Basic header sent, ignored), lockdown on
asking the server every time (lockdown_cache_seconds 0), lockdown on with
the formula's default, and a devpi token. Prints requests per second and the
ratio to lockdown off, and the seconds a pip install of 20 projects takes with the
password (lockdown off, asked every time, the default). Asserts nothing.

    .venv/bin/python test/bench/bench_flood.py [--seconds 15] [--lockdown-only | --flood-only]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.client import pip_install, sentry_client
from support.cluster import no_route_out
from support.debs import build_deb
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION
from support.server import devpi_profile
from support.wheels import make_wheel

SENTRY_NUMBER, FLOOD_NUMBER, READER_NUMBER = 127, 128, 129  # away from the suite and the other benchmarks
FRONT_PORT, DEVPI_PORT, SERVER_PORT = 8080, 8081, 3141
ROOT_PASSWORD, ALICE_PASSWORD = "Bench-Root-pw-1", "Bench-Alice-pw-2"
PAGE = "/alice/dev/+simple/flood-probe/"
FLOODERS, READERS, LOCKDOWN_CLIENTS = 60, 4, 10
PIP_PROJECTS = 20


@dataclass(frozen=True)
class CpuSplit:
    """CPUs the flood's generator runs on, and CPUs for everything else (the sentry host, the reader)."""

    flood: str = ""
    rest: str = ""

    @classmethod
    def of_this_machine(cls) -> CpuSplit:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls()
        half = len(cpus) // 2
        return cls(",".join(map(str, cpus[half:])), ",".join(map(str, cpus[:half])))

    def pinned(self, cpus: str, argv: list[str]) -> list[str]:
        return ["taskset", "-c", cpus, *argv] if cpus else argv

    def pin_host(self, host: TestHost) -> None:
        """Every process in ``host``'s PID namespace onto ``rest``; their children inherit it."""
        if not self.rest:
            return
        namespace = os.readlink(f"/proc/{host.init_pid}/ns/pid")
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "ns/pid") == namespace:
                    argv = ["taskset", "-a", "-c", "-p", self.rest, entry.name]
                    subprocess.run(argv, check=False, capture_output=True)
            except OSError:
                continue  # gone meanwhile


SPLIT = CpuSplit.of_this_machine()


@dataclass
class Reads:
    p50_ms: int
    p99_ms: int
    complete: int
    failed: int
    per_second: float


def ab(host: TestHost, url: str, seconds: int, clients: int, *options: str, cpus: str = "") -> Reads:
    """ApacheBench against ``url`` from ``host``'s network namespace, on ``cpus`` if given."""
    argv = ["nsenter", "--target", str(host.init_pid), "--net", "ab", "-q", "-s", "60", "-c", str(clients)]
    argv += ["-t", str(seconds), "-n", "100000000", *options, url]
    timeout = seconds + 180
    out = subprocess.run(SPLIT.pinned(cpus, argv), capture_output=True, text=True, check=True, timeout=timeout).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    failed = number(r"^Failed requests:\s+(\d+)") + number(r"^Non-2xx responses:\s+(\d+)")
    return Reads(
        int(number(r"^\s+50%\s+(\d+)")),
        int(number(r"^\s+99%\s+(\d+)")),
        int(number(r"^Complete requests:\s+(\d+)")),
        int(failed),
        number(r"^Requests per second:\s+([\d.]+)"),
    )


def flood(host: TestHost, url: str, seconds: int) -> subprocess.Popen:
    """FLOODERS clients POSTing a wrong root password to ``url`` (…/+login) for ``seconds``, in the background."""
    body = host.path("/tmp/wrong-login.json")
    body.write_text(json.dumps({"user": "root", "password": "not-the-root-password"}))
    argv = ["nsenter", "--target", str(host.init_pid), "--net", "ab", "-q", "-s", "60", "-c", str(FLOODERS)]
    argv += ["-t", str(seconds), "-n", "100000000", "-p", str(body), "-T", "application/json", url]
    return subprocess.Popen(SPLIT.pinned(SPLIT.flood, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def login_statuses(host: TestHost, log: str, client: str) -> dict[str, int]:
    """POST /+login answers to ``client`` in an nginx access log since it was emptied: status -> count (the
    front's requests to the node, logged there too, come from loopback)."""
    counted: dict[str, int] = {}
    for line in host.path(log).read_text().splitlines():
        found = re.search(r'"POST /\+login HTTP/[\d.]+" (\d{3}) ', line)
        if not line.startswith(client + " "):
            continue
        if found:
            counted[found.group(1)] = counted.get(found.group(1), 0) + 1
    return counted


def pillar(deb: Path, reader: str, **auth) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "role": "primary", "no_root_pypi": True},
            "nginx": {"limits": {"exempt": [reader]}} if auth else {},
            "auth": auth,
            "front": {"master": "127.0.0.1:80", "port": FRONT_PORT},
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD}},
                "indexes": {"alice/dev": {"bases": [], "acl_upload": ["alice"]}},
            },
        }
    }


def flood_table(host: TestHost, flooder: TestHost, reader: TestHost, seconds: int) -> None:
    ways = {
        "devpi bare": (host, host, f"127.0.0.1:{SERVER_PORT}", ""),
        "devpi's nginx profile": (flooder, reader, f"{host.address}:{DEVPI_PORT}", "/var/log/nginx/devpi-profile.log"),
        "sentry's node": (flooder, reader, host.address, "/var/log/nginx/access.log"),
        "sentry's front": (flooder, reader, f"{host.address}:{FRONT_PORT}", "/var/log/nginx/access.log"),
    }
    SPLIT.pin_host(host)
    cpus = f"the flood on CPUs {SPLIT.flood}, the rest on {SPLIT.rest}" if SPLIT.flood else "one CPU, shared"
    print(f"\nreads of {PAGE} by {READERS} clients, {seconds} s a phase; flood: {FLOODERS} clients POSTing")
    print("a wrong root password to /+login. server: logins the server answered (a hash each; devpi's own")
    print(f"nginx gets the login page, 200, for a POST without Accept), 429: answered by nginx alone; {cpus}\n")
    print(f"{'way in':24} {'flood':6} {'p50 ms':>7} {'p99 ms':>7} {'reads':>7} {'failed':>7} {'server':>7} {'429':>6}")
    for way, (flood_from, read_from, where, log) in ways.items():
        quiet = ab(read_from, f"http://{where}{PAGE}", seconds, READERS, cpus=SPLIT.rest)
        print(f"{way:24} {'none':6} {quiet.p50_ms:7d} {quiet.p99_ms:7d} {quiet.complete:7d} {quiet.failed:7d}")
        if log:
            host.path(log).write_text("")
            host.sh("nginx -s reopen")
        flooding = flood(flood_from, f"http://{where}/+login", seconds + 5)
        loaded = ab(read_from, f"http://{where}{PAGE}", seconds, READERS, cpus=SPLIT.rest)
        flooding.wait(timeout=seconds + 240)
        counted = login_statuses(host, log, flood_from.address) if log else {}
        if log and not counted:
            tail = host.path(log).read_text().splitlines()[-2:]
            print(f"  (no login of {flood_from.address} in {log}; its last lines: {tail})")
        by_server = sum(count for status, count in counted.items() if status != "429")
        refused = f"{by_server:7d} {counted.get('429', 0):6d}" if log else f"{'all':>7} {'-':>6}"
        print(
            f"{'':24} {FLOODERS:<6d} {loaded.p50_ms:7d} {loaded.p99_ms:7d} {loaded.complete:7d} {loaded.failed:7d}"
            f" {refused}  p99 x{loaded.p99_ms / max(quiet.p99_ms, 1):.1f}"
        )


def projects() -> list[str]:
    return [f"flood-project-{number:02d}" for number in range(1, PIP_PROJECTS + 1)]


def timed_pip(reader: TestHost, index: str) -> float:
    reader.run(["rm", "-rf", "/tmp/pip-target"])
    started = time.monotonic()
    pip_install(reader, index, "flood-probe", "/tmp/pip-target", *projects())
    return time.monotonic() - started


def lockdown_table(host: TestHost, salt: MasterlessSalt, deb: Path, reader: TestHost, seconds: int) -> None:
    page = host.run(["curl", "-fsS", "-u", f"alice:{ALICE_PASSWORD}", f"http://127.0.0.1{PAGE}"]).stdout
    (relative,) = re.findall(r'href="\.\./\.\./(\+f/[^"#]+)', page)[:1]
    paths = {"simple page": PAGE, "release file": f"/alice/dev/{relative}"}
    sentry_client(host, "login", "root", password=ROOT_PASSWORD)
    sentry_client(host, "token-create", "-u", "alice", "-e", "1h", "-o", "/tmp/alice.token")
    token = host.path("/tmp/alice.token").read_text().strip()
    password = base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode()
    by_token = base64.b64encode(f"alice:{token}".encode()).decode()
    rows = {
        "lockdown off, password sent": ({"lockdown": False}, password),
        "lockdown, asked every time": ({"lockdown": True, "lockdown_cache_seconds": 0}, password),
        "lockdown, password (default)": ({"lockdown": True}, password),
        "lockdown, token": ({"lockdown": True}, by_token),
    }
    print(f"\nrequests per second, {LOCKDOWN_CLIENTS} clients, {seconds} s each, from another host; a pip install")
    print(f"of {PIP_PROJECTS} projects from alice/dev with alice's password in the index URL, from another host\n")
    print(f"{'':30} " + " ".join(f"{name:>14} {'x off':>6}" for name in paths) + f" {'pip s':>7} {'x off':>6}")
    baseline: dict[str, float] = {}
    for row, (auth, credentials) in rows.items():
        applied = salt.apply_with(pillar(deb, reader.address, **auth))
        if not applied:
            raise SystemExit(f"{row}: the apply failed")
        figures = []
        for name, path in paths.items():
            url, header = f"http://{host.address}{path}", f"Authorization: Basic {credentials}"
            load = ab(reader, url, seconds, LOCKDOWN_CLIENTS, "-H", header)
            baseline.setdefault(name, load.per_second)
            figures.append(f"{load.per_second:14.1f} {load.per_second / baseline[name]:6.2f}")
            if load.failed:
                figures[-1] += f" ({load.failed} failed)"
        if credentials == password:
            index = f"http://alice:{ALICE_PASSWORD}@{host.address}/alice/dev/+simple/"
            took = min(timed_pip(reader, index) for _ in range(3))  # the best of three: pip's own start varies
            baseline.setdefault("pip", took)
            figures.append(f"{took:7.1f} {baseline['pip'] / took:6.2f}")
        print(f"{row:30} " + " ".join(figures))


class BenchSalt(MasterlessSalt):
    def apply_with(self, pillar_: dict) -> bool:
        self.set_pillar(pillar_)
        applied = self.apply("sentry")
        if not applied.succeeded:
            print(applied.failed or applied.errors)
        return applied.succeeded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--lockdown-only", action="store_true", help="the lockdown table alone")
    only.add_argument("--flood-only", action="store_true", help="the flood table alone")
    args = parser.parse_args()
    if not shutil.which("ab"):
        raise SystemExit("ab not found: script/bootstrap test installs apache2-utils")
    deb = build_deb(DEFAULT_VERSION)
    with (
        new_host("bench-flood-sentry", address=host_address(SENTRY_NUMBER)) as host,
        new_host("bench-flood-from", address=host_address(FLOOD_NUMBER)) as flooder,
        new_host("bench-flood-reader", address=host_address(READER_NUMBER)) as reader,
    ):
        for each in (host, flooder, reader):
            no_route_out(each)
        salt = BenchSalt(host, pillar(deb, reader.address))
        for sls in ("sentry", "sentry.front"):
            applied = salt.apply(sls)
            if not applied.succeeded:
                raise SystemExit(f"{sls} failed: {applied.failed or applied.errors}")
        sentry_client(host, "use", "http://127.0.0.1/alice/dev")
        sentry_client(host, "login", "alice", password=ALICE_PASSWORD)
        for name in ("flood-probe", *projects()):
            wheel = make_wheel(Path("/tmp"), name, "1.0", payload="x" * 20000)
            host.path("/tmp").joinpath(wheel.name).write_bytes(wheel.read_bytes())
            sentry_client(host, "upload", f"/tmp/{wheel.name}")
        if not args.lockdown_only:
            log = f"listen {DEVPI_PORT};\n    access_log /var/log/nginx/devpi-profile.log;"
            devpi_profile(
                host,
                "nginx-devpi.conf",
                SERVER_PORT,
                DEVPI_PORT,
                lambda site: site.replace(f"listen {DEVPI_PORT};", log),
            )
            flood_table(host, flooder, reader, args.seconds)
        if not args.flood_only:
            lockdown_table(host, salt, deb, reader, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
