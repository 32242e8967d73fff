"""Benchmark: root/pypi against an upstream listing 100,000 projects, mirror:no_project_list false and true.

PyPI's project list holds about 900,000 names; devpi fetches it the first time
it needs to know whether a project exists, and devpi-web then puts every name
into its search index, and again at each start. This measures what that costs
with an upstream test host listing ``--projects`` generated names beside the
real wheels, on a fresh sentry host per setting (the formula applied with
mirror:url at the upstream), in two phases:

  first request   pip's first request (root/pypi/+simple/six/) after the deploy
  restart         supervisorctl restart, as after an upgrade or a reboot

and samples every second for ``--seconds``: /+api's answer time from another
network namespace, the server's CPU time and RSS, the search-index documents
committed (its log). Prints the numbers and false/true ratios; asserts nothing.

    .venv/bin/python test/bench/bench_project_list.py [--projects 100000] [--seconds 150]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.cluster import no_route_out
from support.debs import build_deb
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION
from support.upstream import LogTail, Upstream, upstream_wheels

# Bridge host numbers away from the suite's (1-60) and test_mirror's (100-102).
UPSTREAM_NUMBER, SENTRY_NUMBERS = 110, {False: 111, True: 112}
SERVER_LOG = "/var/log/sentry/sentry-server.log"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The machine's own proxy settings, if any, must not carry requests to a test host.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BUSY = 0.10  # of one core, averaged over 5 s: the server is still working


@dataclass
class Sample:
    at: float  # seconds since the phase began
    api_seconds: float | None  # None: /+api did not answer 200
    cpu_seconds: float  # the server's CPU time so far
    rss_mb: float


@dataclass
class Phase:
    name: str
    samples: list[Sample] = field(default_factory=list)
    indexed: int = 0  # documents committed to devpi-web's search index
    answers_after: float | None = None  # after a restart: until /+api answered

    @property
    def answered(self) -> list[Sample]:
        """Samples once the server answered: its start-up (argon2 and all) is not the mirror's doing."""
        return [s for s in self.samples if s.api_seconds is not None]

    def cpu_used(self) -> float:
        answered = self.answered
        return answered[-1].cpu_seconds - answered[0].cpu_seconds if len(answered) > 1 else 0.0

    def peak_rss(self) -> float:
        return max(s.rss_mb for s in self.answered)

    def slowest_api(self) -> float:
        return max(s.api_seconds for s in self.answered)

    def busy_until(self) -> float:
        """The last moment the server used more than BUSY of a core (over 5 s); 0 if never."""
        last = 0.0
        answered = self.answered
        for earlier, later in zip(answered, answered[5:], strict=False):
            if (later.cpu_seconds - earlier.cpu_seconds) / (later.at - earlier.at) > BUSY:
                last = later.at
        return last

    def row(self) -> str:
        answered = self.answered
        if not answered:
            return f"{self.name:14} never answered within {self.samples[-1].at:.0f} s"
        latencies = [s.api_seconds for s in answered]
        span = answered[-1].at - answered[0].at if len(answered) > 1 else 1.0
        window = self.samples[-1].at
        busy = self.busy_until()
        return (
            f"{self.name:14} "
            f"{'-' if self.answers_after is None else f'{self.answers_after:.1f} s':>9} "
            f"{statistics.median(latencies) * 1000:7.0f} {max(latencies) * 1000:7.0f} ms "
            f"{len(self.samples) - len(answered):5} "
            f"{self.cpu_used():8.1f} s {100 * self.cpu_used() / span:4.0f} % "
            f"{self.peak_rss():6.0f} {answered[-1].rss_mb:6.0f} MB "
            f"{self.indexed:8} "
            f"{'>' if busy >= window - 5 else ' '}{busy:5.0f} s"
        )


def server_pid(host: TestHost) -> int | None:
    got = host.run(["supervisorctl", "pid", "sentry-server"], check=False).stdout.strip()
    return int(got) if got.isdigit() and got != "0" else None


def sample(host: TestHost, started: float) -> Sample:
    pid = server_pid(host)
    cpu = rss = 0.0
    if pid:
        try:
            fields = host.path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            status = host.path(f"/proc/{pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
        except (FileNotFoundError, ProcessLookupError, AttributeError):
            pass
    asked = time.monotonic()
    try:
        with DIRECT.open(f"http://{host.address}/+api", timeout=60) as answer:
            answer.read()
        api = time.monotonic() - asked
    except OSError:
        api = None
    return Sample(time.monotonic() - started, api, cpu, rss)


def observe(host: TestHost, phase: Phase, seconds: float) -> Phase:
    log = LogTail(host, SERVER_LOG)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        phase.samples.append(sample(host, started))
        if phase.answers_after is None and phase.name == "restart" and phase.samples[-1].api_seconds is not None:
            phase.answers_after = phase.samples[-1].at
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
    phase.indexed = sum(int(n) for n in re.findall(r"Committing (\d+) new documents", log.new()))
    return phase


def measure(deb: Path, upstream: Upstream, no_project_list: bool, seconds: float) -> list[Phase]:
    name, number = f"bench-npl-{str(no_project_list).lower()}", SENTRY_NUMBERS[no_project_list]
    with new_host(name, address=host_address(number)) as host:
        no_route_out(host)
        pillar = {
            "sentry": {
                "package": {"source": "deb", "deb": str(deb)},
                "server": {"root_password": "bench-root-pw"},
                "mirror": {
                    "url": upstream.url,
                    "no_project_list": no_project_list,
                    "ca_certificates": upstream.ca_certificates(),
                },
            }
        }
        deployed = MasterlessSalt(host, pillar).apply("sentry")
        if not deployed.succeeded:
            raise SystemExit(f"deploy failed: {deployed.failed or deployed.errors}")
        first = Phase("first request")
        # What pip asks first; without a project list the mirror asks the upstream for six alone.
        host.run(["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/root/pypi/+simple/six/"])
        observe(host, first, seconds)
        restart = Phase("restart")
        # Stopped first, so that every answer sampled comes from the new process.
        host.run(["supervisorctl", "stop", "sentry-server"])
        host.sh("supervisorctl start sentry-server >/dev/null 2>&1 &")
        observe(host, restart, seconds)
        return [first, restart]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100_000, help="generated names in the upstream's list")
    parser.add_argument("--seconds", type=float, default=150, help="how long each phase is sampled")
    options = parser.parse_args()
    deb = build_deb(DEFAULT_VERSION)
    results = {}
    with new_host("bench-big-up", address=host_address(UPSTREAM_NUMBER)) as upstream_host:
        no_route_out(upstream_host)
        upstream = Upstream(upstream_host, upstream_wheels(), generated_projects=options.projects).start()
        for no_project_list in (False, True):
            results[no_project_list] = measure(deb, upstream, no_project_list, options.seconds)

    print(f"upstream project list: {options.projects + 4} names; each phase sampled {options.seconds:.0f} s, every 1 s")
    print(
        f"{'phase':14} {'answers':>9} {'/+api median max':>18} {'fails':>5} {'CPU':>10} {'mean':>6} "
        f"{'RSS peak end':>16} {'indexed':>8} {'busy until':>9}"
    )
    for no_project_list, phases in results.items():
        print(f"mirror:no_project_list {str(no_project_list).lower()}")
        for phase in phases:
            print(phase.row())
    print("ratios, no_project_list false / true:")
    for index, name in enumerate(("first request", "restart")):
        heavy, light = results[False][index], results[True][index]
        print(
            f"  {name:14} CPU {heavy.cpu_used() / max(light.cpu_used(), 0.01):6.1f}x   "
            f"RSS peak {heavy.peak_rss() / light.peak_rss():4.1f}x   "
            f"slowest /+api {heavy.slowest_api() / light.slowest_api():5.1f}x"
        )
    print("(RSS counts only samples once /+api answered: at start devpi-server derives its secret with argon2")
    print(" and briefly holds about 580 MB whatever the mirror does.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
