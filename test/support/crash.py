"""What the crash tests share (test_crash.py, test_crash_replica.py): a deployed host's view (``Crashable``),
an operation run in the host and killed from outside at a chosen step (``Operation``), and what a refused
apply and a server that must not serve look like."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import time
from pathlib import Path

import psutil

from support.client import pip_of
from support.masterless import MasterlessSalt, StateRun
from support.paths import REPO

HOME = "/var/lib/sentry"
SERVERDIR = f"{HOME}/data"
TRAIL = f"{SERVERDIR}.operation.json"
BASE_EXPORT = f"{HOME}/base-export"  # not named export-*: the cases clear those
PROGRAM = "sentry-server"
ROOT_PASSWORD = "Crash-Root-pw-9"
OWNER, OWNER_PASSWORD = "carol", "Crash-Carol-pw-3"
INDEXES = ("carol/dev", "carol/prod")
WHEELS = 80
KNOWN = ("crash-probe-3", "1.3")  # fetched with pip through nginx
POLL = 0.02
KILL_TIMEOUT = 300
SERVER_URL = "http://127.0.0.1:3141"
NGINX_URL = "http://127.0.0.1"

# What a client sees, read inside the host through nginx: users, indexes (what
# an operator set), the sha256 of every release file as nginx hands it out,
# and of every file on disk below the serverdir (but a replica's download cut
# short by a stop, ``*-tmp``: the file is fetched again).
SNAPSHOT = r"""
import hashlib, json, os, sys, urllib.parse, urllib.request

base, serverdir = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def fetch(url, accept="application/json"):
    with opener.open(urllib.request.Request(url, headers={"Accept": accept}), timeout=30) as response:
        return response.read()

def result(path):
    return json.loads(fetch(base + path))["result"]

users = result("/")
indexes, served, on_disk = {}, {}, {}
for user in sorted(users):
    for name, config in sorted(users[user].get("indexes", {}).items()):
        indexes[f"{user}/{name}"] = {key: config.get(key) for key in ("type", "bases", "volatile", "acl_upload")}
        if config.get("type") == "mirror":
            continue
        for project in result(f"/{user}/{name}").get("projects", []):
            for release in result(f"/{user}/{name}/{project}").values():
                for link in release.get("+links", []):
                    # an index lists its bases' releases too: named by the index that holds the file
                    owner, index = urllib.parse.urlsplit(link["href"]).path.split("/")[1:3]
                    basename = link["href"].rsplit("/", 1)[-1]
                    served[f"{owner}/{index}/{basename}"] = hashlib.sha256(fetch(link["href"], "*/*")).hexdigest()
files = os.path.join(serverdir, "+files")
for root, _dirs, names in os.walk(files):
    for name in (name for name in names if not name.endswith("-tmp")):
        user, index = os.path.relpath(root, files).split(os.sep)[:2]
        with open(os.path.join(root, name), "rb") as handle:
            on_disk[f"{user}/{index}/{name}"] = hashlib.sha256(handle.read()).hexdigest()
print(json.dumps({"users": sorted(users), "indexes": indexes, "served": served, "on_disk": on_disk}))
"""


def deb_version(deb: Path) -> str:
    """6.14.0-1 from sentry_6.14.0-1_amd64.deb."""
    return deb.name.split("_")[1]


def pillar(version: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": {
                "users": {OWNER: {"password": OWNER_PASSWORD}},
                "indexes": {"carol/dev": {"bases": []}, "carol/prod": {"bases": ["carol/dev"]}},
            },
        }
    }


class Crashable:
    """The deployed host, its two versions, and what it held before any crash."""

    def __init__(self, salt: MasterlessSalt, old: str, new: str, wheels: dict[str, str]) -> None:
        self.salt, self.host, self.old, self.new = salt, salt.host, old, new
        self.wheels = wheels  # file name -> sha256 as uploaded
        self.baseline: dict = {}

    def call(self, *args: str):
        ran = self.salt.call(*args, check=False)
        assert ran.returncode == 0, f"salt-call {' '.join(args)}:\n{ran.stdout[-4000:]}\n{ran.stderr[-4000:]}"
        return json.loads(ran.stdout)["local"]

    def snapshot(self, serverdir: str = SERVERDIR) -> dict:
        return json.loads(self.host.run(["/usr/bin/python3", "-c", SNAPSHOT, NGINX_URL, serverdir]).stdout)

    def disk(self, serverdir: str) -> dict[str, str]:
        """sha256 of every release file below ``serverdir`` (no server needed); not a replica's download
        cut short by a stop (``*-tmp``: the file is fetched again)."""
        listed = self.host.sh(
            f"cd {serverdir}/+files && find . -type f ! -name '*-tmp' -print0 | sort -z | xargs -0 -r sha256sum"
        )
        found = {}
        for line in listed.stdout.splitlines():
            digest, path = line.split(None, 1)
            parts = Path(path).parts  # user, index, +f, ab, cdef, name
            found[f"{parts[0]}/{parts[1]}/{parts[-1]}"] = digest
        return found

    def version(self) -> str:
        return self.host.run(["dpkg-query", "-W", "-f=${Version}", "sentry"], check=False).stdout

    def answers(self, url: str) -> bool:
        return self.host.run(["curl", "-fsS", "-o", "/dev/null", "--max-time", "5", url], check=False).returncode == 0

    def program_state(self) -> str:
        ran = self.host.run(["supervisorctl", "status", PROGRAM], check=False)
        words = ran.stdout.split()
        return words[1] if len(words) > 1 else ran.stdout.strip()

    def apply(self, version: str | None = None) -> StateRun:
        if version:
            self.salt.set_pillar(pillar(version))
        return self.salt.apply("sentry")

    def clear_leftovers(self) -> None:
        """What earlier cases kept (they are checked there): the tmpfs host has no room to spare."""
        self.host.sh(f"rm -rf {HOME}/_data-* {HOME}/._data-* {HOME}/export-* {HOME}/.data.import-*")
        self.host.sh(f"rm -f {SERVERDIR}/.padding")

    def assert_as_before(self, version: str) -> None:
        """Package, data, services and the formula's view: all as before the crash."""
        assert self.version() == version
        audit = self.host.run(["dpkg", "--audit"], check=False)
        assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout + audit.stderr
        assert not self.host.path(TRAIL).exists()
        assert self.answers(f"{SERVER_URL}/+api") and self.answers(f"{NGINX_URL}/+api")
        assert self.snapshot() == self.baseline
        assert self.pip_download_sha256() == self.wheels[known_wheel()]
        applied = self.apply(version)
        assert applied.succeeded, applied.failed or applied.errors
        again = self.apply()
        assert again.succeeded and again.changed == {}, again.changed or again.failed

    def pip_download_sha256(self) -> str:
        """pip, with no configuration of this machine, downloads the known wheel from carol/prod through nginx."""
        name, version = KNOWN
        self.host.sh("rm -rf /tmp/pip-download")
        self.host.run(
            [
                pip_of(self.host),
                "download",
                "--no-deps",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--index-url",
                f"{NGINX_URL}/carol/prod/+simple/",
                "-d",
                "/tmp/pip-download",
                f"{name}=={version}",
            ],
            env={"PIP_CONFIG_FILE": "/dev/null"},
        )
        return hashlib.sha256(self.host.path(f"/tmp/pip-download/{known_wheel()}").read_bytes()).hexdigest()


def known_wheel() -> str:
    name, version = KNOWN
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


# --- starting and killing an operation ----------------------------------------


class Operation:
    """``salt-call --local ARGS`` inside the host, in a session of its own, watched and killed from outside."""

    LOG = "/tmp/crash-operation.log"

    def __init__(self, deployment: Crashable, *args: str) -> None:
        self.deployment, self.host = deployment, deployment.host
        salt_call = shlex.join(
            [str(REPO / ".venv" / "bin" / "salt-call"), "-c", MasterlessSalt.CONF, "--local", "--out=json", *args]
        )
        started = self.host.sh(f"setsid {salt_call} >{self.LOG} 2>&1 </dev/null & echo $!")
        self.leader = self._outside_pid(int(started.stdout.strip()))
        self.process = psutil.Process(self.leader)

    def _outside_pid(self, inside: int) -> int:
        """The pid in this machine's namespace of the host's process ``inside``."""
        namespace = os.readlink(f"/proc/{self.host.init_pid}/ns/pid")
        for process in psutil.process_iter():
            try:
                if os.readlink(f"/proc/{process.pid}/ns/pid") != namespace:
                    continue
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            nspids = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
            if int(nspids[-1]) == inside:
                return process.pid
        raise AssertionError(f"salt-call (pid {inside} in the host) is gone at once: {self.output()}")

    def output(self) -> str:
        return self.host.path(self.LOG).read_text(errors="replace")

    def trail(self) -> dict | None:
        try:
            return json.loads(self.host.path(TRAIL).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        try:
            return self.process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def members(self) -> set[psutil.Process]:
        """Every process of the session, and any descendant that left it."""
        found = set()
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.leader:
                    found.add(process)
            except OSError:
                pass
        try:
            found |= {self.process, *self.process.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        return found

    def commands(self) -> list[str]:
        names = []
        for process in self.members():
            try:
                names.append(" ".join(process.cmdline()))
            except psutil.Error:
                pass
        return names

    def wait_until(self, what: str, ready) -> dict:
        """Poll every POLL s until ``ready(trail)`` holds; fails when the operation ended first."""
        deadline = time.monotonic() + KILL_TIMEOUT
        while True:
            trail = self.trail()
            if trail is not None and ready(self, trail):
                return trail
            if not self.running():
                raise AssertionError(f"the operation ended before {what}; trail {trail}:\n{self.output()[-5000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {what} within {KILL_TIMEOUT}s; trail {trail}")
            time.sleep(POLL)

    def kill(self) -> list[str]:
        """Freeze the whole tree (no process sees another die), then SIGKILL it all; what was killed."""
        frozen: set[psutil.Process] = set()
        while True:
            more = self.members() - frozen
            if not more:
                break
            for process in more:
                try:
                    process.send_signal(signal.SIGSTOP)
                except psutil.NoSuchProcess:
                    pass
            frozen |= more
        killed = []
        for process in frozen:
            try:
                killed.append(" ".join(process.cmdline()))
                process.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        _gone, alive = psutil.wait_procs(list(frozen), timeout=30)
        assert not alive, alive
        print(f"\nkilled at step {(self.trail() or {}).get('step')!r}: {sorted(command[:100] for command in killed)}")
        return killed


def scratch_dirs(deployment: Crashable) -> list[Path]:
    """What sentry-server --import writes into before it moves it in place (``.data.import-*``)."""
    return sorted(deployment.host.path(HOME).glob(".data.import-*"))


def runs_import(command: str) -> bool:
    """``command`` is sentry-server's import (devpi-import runs inside it)."""
    words = command.split()
    return "/usr/sbin/sentry-server" in words and "--import" in words


def importing(operation: Operation) -> bool:
    """devpi-import runs and has begun to fill its scratch serverdir."""
    return any(runs_import(command) for command in operation.commands()) and any(
        any(scratch.iterdir()) for scratch in scratch_dirs(operation.deployment)
    )


def assert_refused(deployment: Crashable, trail: dict) -> StateRun:
    """The apply fails at its guard, names the trail's backup and sentry_data.recover, and starts nothing."""
    refused = deployment.apply()
    assert not refused.succeeded
    guard = refused.by_id("sentry-server-no-interrupted-operation")
    comment = guard["comment"]
    assert guard["result"] is False and "sentry_data.recover" in comment, refused.failed
    if trail.get("backup"):
        assert trail["backup"] in comment, comment
    # nothing installed, started or initialised
    assert refused.changes_of_failed_run == {}, refused.changes_of_failed_run
    return refused


def assert_not_serving(deployment: Crashable) -> None:
    assert deployment.program_state() not in ("RUNNING", "STARTING"), deployment.program_state()
    assert not deployment.answers(f"{SERVER_URL}/+api")


def assert_supervisor_restart_does_not_serve(deployment: Crashable) -> None:
    """As at boot: a new supervisord starts the program (autostart), which refuses to serve over the trail."""
    log = deployment.host.path(f"/var/log/sentry/{PROGRAM}.log")
    size = log.stat().st_size if log.exists() else 0
    # Not 'service supervisor restart': Debian's init script starts the new supervisord before the old
    # one has gone, and the new one gives up (nothing runs afterwards).
    deployment.host.run(["service", "supervisor", "stop"])
    deployment.host.wait_for("! pgrep -x supervisord", timeout=60)
    deployment.host.run(["service", "supervisor", "start"])
    deadline = time.monotonic() + 60
    while deployment.program_state() != "FATAL":
        assert not deployment.answers(f"{SERVER_URL}/+api"), "the server serves over the trail"
        assert time.monotonic() < deadline, deployment.program_state()
        time.sleep(0.5)
    with log.open(errors="replace") as handle:
        handle.seek(size)
        said = handle.read()
    assert "Not serving over it" in said, said[-3000:]
    assert not deployment.answers(f"{SERVER_URL}/+api")


PRERM = "/var/lib/dpkg/info/sentry.prerm"
PRERM_ENTERED = "/tmp/sentry-test-prerm-entered"


def killing_point(deployment: Crashable, step: str):
    """When to kill an upgrade at ``step``: a predicate on the operation and its trail."""
    if step == "install in prerm":
        return lambda operation, trail: trail.get("step") == "install" and deployment.host.path(PRERM_ENTERED).exists()
    if step == "export":
        return lambda operation, trail: (
            trail.get("step") == "export" and any(deployment.host.path(HOME).glob("export-*.incomplete/*"))
        )
    if step == "install":
        return lambda operation, trail: (
            trail.get("step") == "install"
            and any(
                command.split()[:1] == ["/usr/bin/dpkg"] and "--unpack" in command for command in operation.commands()
            )
        )
    if step == "import":
        return lambda operation, trail: trail.get("step") == "import" and importing(operation)
    if step == "snapshot":  # some of it made: the hidden scratch folder holds files already
        return lambda operation, trail: (
            trail.get("step") == "snapshot" and any(deployment.host.path(HOME).glob("._data-backup-*.incomplete/*"))
        )
    return lambda operation, trail: trail.get("step") == step
