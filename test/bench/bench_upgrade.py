"""Benchmark: a master upgrade's write window, in place and by export/import, at 1,000 and 10,000 files.

For each size, one test host on the bridge runs the older sentry deb from a
local apt repository with FILES generated wheels in two indexes. The data is
uploaded once and kept as an export under build/bench-upgrade/ (by size and
version); later runs import that export instead of uploading. Then, while a
writer (new users, as root, every 0.2 s) and a reader (a known release file,
every 0.1 s) go through the host's nginx from outside:

  in place   ``sentry_upgrade.master`` with ``method=auto`` (6.14 -> 6.20 share
             devpi's database version: snapshot, install, start, check)
  export     the same upgrade forced to ``method=export``, after the host is
             put back to the older version on the snapshot's data
  bare       devpi's own ``devpi-export`` by the older version (its server
             stopped) of the data the export upgrade starts from,
             ``devpi-import`` of it by the newer one into a scratch folder
             after the upgrades, timed, plus the export method's own "start
             server" step: what export/import cannot do without. devpi's
             import waits for devpi-web's events by default; the upgrade's
             (--no-events) leaves them to the started server: its time is
             printed too

Prints, per size and method: the write window the writer saw and the one the
module reports, failed reads (a lone host stops nginx for the window: reads
go elsewhere only behind a front, as test_upgrade shows with 0 failed), and
then the window's growth from the smallest to the largest size and export /
bare. Goals: in place <= 10 s at 10,000 files and no growth beyond noise;
export <= 1.2 x bare. Asserts nothing.

    .venv/bin/python test/bench/bench_upgrade.py [--files 1000 10000]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.aptrepo import make_apt_repo, use_apt_repo
from support.client import upload_generated
from support.debs import build_deb, deb_version, known_versions
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION, REPO

ROOT_PASSWORD = "bench-upgrade-root-pw"
PASSWORD = "Bench-Upgrade-pw-1"
INDEXES = ("alice/dev", "alice/prod")
VERSIONS_PER_PROJECT = 10
HOME, SERVERDIR, PROGRAM = "/var/lib/sentry", "/var/lib/sentry/data", "sentry-server"
DEVPI_BIN = "/opt/virtualenvs/sentry/bin"  # devpi's own commands, beside the package's
BARE_EXPORT = f"{HOME}/bare-export"  # beside the serverdir: the upgrades move the serverdir, not this
CACHE = REPO / "build" / "bench-upgrade"
# Bridge host numbers away from the suite's (1-60), test_mirror's (100-104) and bench_mirror's (120-122).
HOST_NUMBER = 110
CALL_TIMEOUT = 3600


def pillar(version: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": {
                "users": {"alice": {"password": PASSWORD}},
                "indexes": {"alice/dev": {"bases": []}, "alice/prod": {"bases": ["alice/dev"], "volatile": False}},
            },
        }
    }


def http_request(url: str, **options) -> urllib.request.Request:
    return urllib.request.Request(url, **options)  # noqa: S310 - the bench's own http URLs


def call(salt: MasterlessSalt, *args: str) -> dict:
    """salt-call's answer; the bench stops with salt's own words if it failed."""
    ran = salt.host.run(
        [str(REPO / ".venv/bin/salt-call"), "-c", salt.CONF, "--local", "--out=json", *args],
        check=False,
        timeout=CALL_TIMEOUT,
    )
    if ran.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}")
    return json.loads(ran.stdout)["local"]


def load_data(salt: MasterlessSalt, files: int, version: str) -> str:
    """The host holds ``files`` release files: the cached export imported, else uploaded and then cached."""
    cached = CACHE / f"export-{files}-{version}"
    inside = f"{HOME}/bench-export"
    if cached.is_dir():
        shutil.copytree(cached, salt.host.path(inside))
        salt.host.run(["chown", "-R", "sentry:sentry", inside])
        started = time.monotonic()
        call(salt, "sentry_data.import", inside, "move_aside=True")
        return f"imported from {cached} in {time.monotonic() - started:.0f} s"
    seconds = upload_generated(salt.host, files, INDEXES, VERSIONS_PER_PROJECT, "alice", PASSWORD)
    call(salt, "sentry_data.export", f"dest={inside}")
    making = cached.with_name(cached.name + ".incomplete")
    shutil.rmtree(making, ignore_errors=True)
    shutil.copytree(salt.host.path(inside), making)
    making.rename(cached)
    return f"uploaded in {seconds:.0f} s, export kept in {cached}"


class Traffic:
    """A writer making users as root and a reader fetching one release file through nginx, until stopped."""

    def __init__(self, url: str, file_path: str) -> None:
        self.url, self.file_path = url, file_path
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.auth = self._login()
        self.writes: list[tuple[float, bool]] = []
        self.reads: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def _login(self) -> str:
        body = json.dumps({"user": "root", "password": ROOT_PASSWORD}).encode()
        request = http_request(f"{self.url}/+login", data=body, headers={"Content-Type": "application/json"})
        with self.opener.open(request, timeout=30) as response:
            token = json.loads(response.read())["result"]["password"]
        return base64.b64encode(f"root:{token}".encode()).decode()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _attempt(self, request: urllib.request.Request, ok_status: int) -> bool:
        try:
            with self.opener.open(request, timeout=10) as response:
                response.read()
                return response.status == ok_status
        except (OSError, urllib.error.URLError):
            return False

    def _write(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            request = http_request(
                f"{self.url}/bench{time.monotonic_ns()}x{number}",
                data=json.dumps({"password": f"Bench-pw-{number}"}).encode(),
                method="PUT",
                headers={"Content-Type": "application/json", "X-Devpi-Auth": self.auth},
            )
            self.writes.append((time.monotonic(), self._attempt(request, 201)))
            self._stop.wait(0.2)

    def _read(self) -> None:
        while not self._stop.is_set():
            self.reads.append((time.monotonic(), self._attempt(http_request(self.url + self.file_path), 200)))
            self._stop.wait(0.1)

    def write_window(self) -> float:
        """Seconds from the first refused write to the first acknowledged one after the last refusal."""
        refused = [at for at, ok in self.writes if not ok]
        if not refused:
            return 0.0
        after = [at for at, ok in self.writes if ok and at > refused[-1]]
        return (after[0] if after else refused[-1]) - refused[0]

    def failed_reads(self) -> int:
        return sum(1 for _, ok in self.reads if not ok)


def known_file(url: str) -> str:
    """The path of a release file of alice/dev, as its project page links it."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = http_request(f"{url}/alice/dev/bench-probe-0", headers={"Accept": "application/json"})
    with opener.open(request, timeout=30) as response:
        project = json.loads(response.read())["result"]
    return next(iter(project.values()))["+links"][0]["href"].removeprefix(url)


def upgrade(salt: MasterlessSalt, url: str, new: str, method: str) -> dict:
    with Traffic(url, known_file(url)) as traffic:
        time.sleep(2)
        result = call(salt, "sentry_upgrade.master", new, "refresh=False", f"method={method}")
        time.sleep(3)
    return {
        "result": result,
        "window": traffic.write_window(),
        "failed_reads": traffic.failed_reads(),
        "reads": len(traffic.reads),
    }


def back_to_old(salt: MasterlessSalt, old: str, snapshot: str) -> None:
    """The older version on the data it had (the in-place upgrade's snapshot)."""
    host = salt.host
    host.run(["supervisorctl", "stop", PROGRAM])
    host.sh(f"rm -rf {SERVERDIR} && mv {snapshot} {SERVERDIR}")
    host.run(
        ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={old}"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=600,
    )
    salt.set_pillar(pillar(old))
    applied = salt.apply("sentry")
    if not applied.succeeded:
        raise SystemExit(f"back to {old} failed: {applied.failed or applied.errors}")


def _timed_devpi_run(host: TestHost, command: str, argv: list[str]) -> float:
    """One of devpi's own commands in the package's virtualenv, as the service user, timed."""
    started = time.monotonic()
    host.run(["runuser", "-u", "sentry", "--", f"{DEVPI_BIN}/{command}", *argv], timeout=CALL_TIMEOUT)
    return time.monotonic() - started


def bare_export(host: TestHost) -> float:
    """devpi's own export of the serverdir by the version installed (the server stopped meanwhile), timed."""
    host.run(["supervisorctl", "stop", PROGRAM])
    host.sh(f"rm -rf {BARE_EXPORT}")
    seconds = _timed_devpi_run(host, "devpi-export", ["--serverdir", SERVERDIR, BARE_EXPORT])
    host.run(["supervisorctl", "start", PROGRAM])
    return seconds


def bare_imports(host: TestHost) -> dict[str, float]:
    """devpi's own import of that export by the version installed into a scratch serverdir, timed: as devpi
    does by default (waiting for devpi-web's events) and with --no-events, as the upgrade does."""
    timed = {}
    for name, extra in (("import", []), ("import --no-events", ["--no-events"])):
        host.sh(f"rm -rf {HOME}/bare-data")
        timed[name] = _timed_devpi_run(host, "devpi-import", ["--serverdir", f"{HOME}/bare-data", *extra, BARE_EXPORT])
    host.sh(f"rm -rf {BARE_EXPORT} {HOME}/bare-data")
    return timed


def measure(files: int, repo: Path, old: str, new: str) -> dict:
    with new_host(f"bench-up-{files}", address=host_address(HOST_NUMBER)) as host:
        use_apt_repo(host, repo)
        salt = MasterlessSalt(host, pillar(old))
        deployed = salt.apply("sentry")
        if not deployed.succeeded:
            raise SystemExit(f"deploy failed: {deployed.failed or deployed.errors}")
        print(f"{files} files: {load_data(salt, files, old)}", flush=True)
        url = f"http://{host.address}"
        in_place = upgrade(salt, url, new, "auto")
        back_to_old(salt, old, in_place["result"]["backup"])
        # By the old version, as the upgrade's export, of what the export upgrade starts from (the users
        # the writer made during the in-place upgrade included).
        timed = {"export": bare_export(host)}
        export = upgrade(salt, url, new, "export")
        timed.update(bare_imports(host))  # by the new version, as the upgrade's import
    timed["start"] = export["result"]["steps"]["start server"]
    for name, run in (("in place", in_place), ("export", export)):
        result = run["result"]
        print(
            f"  {name:8} ({result['method']['method']}): write window {run['window']:.1f} s seen by the writer, "
            f"{result['write_outage_seconds']:.1f} s by the module; failed reads {run['failed_reads']} of "
            f"{run['reads']}; steps (s) {result['steps']}",
            flush=True,
        )
    baseline = timed["export"] + timed["import"] + timed["start"]
    window = export["result"]["write_outage_seconds"]
    print(
        f"  bare     export {timed['export']:.1f} s + import {timed['import']:.1f} s + start {timed['start']:.1f} s "
        f"= {baseline:.1f} s; export window / bare = {window / baseline:.2f} (goal <= 1.2); "
        f"the import with --no-events alone: {timed['import --no-events']:.1f} s",
        flush=True,
    )
    return {"in place": in_place["result"]["write_outage_seconds"], "export": export["result"]["write_outage_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    sizes = sorted(parser.parse_args().files)
    new_deb = build_deb(DEFAULT_VERSION)
    old_deb = build_deb(next(v for v in known_versions() if v != DEFAULT_VERSION))
    old, new = deb_version(old_deb), deb_version(new_deb)
    repo = make_apt_repo(REPO / "build" / "apt-bench-upgrade", [new_deb, old_deb])
    CACHE.mkdir(parents=True, exist_ok=True)
    windows = {files: measure(files, repo, old, new) for files in sizes}
    if len(sizes) > 1:
        small, large = windows[sizes[0]], windows[sizes[-1]]
        for method in ("in place", "export"):
            print(
                f"{method}: write window {small[method]:.1f} s at {sizes[0]} files, {large[method]:.1f} s at "
                f"{sizes[-1]}: growth x{large[method] / small[method]:.2f}"
                + (" (goal: <= 10 s, no growth beyond noise)" if method == "in place" else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
