"""Crash safety (issue 12): kill -9 of salt-call and all its children in the middle of an export, an
import, a master upgrade and a replica upgrade, then apply; recover, or run the upgrade again.

One test host is deployed at the older sentry version from a local apt
repository, with a user, two indexes and WHEELS release files. Each case
starts salt-call in the background in a session of its own, watches the
trail the operation keeps beside the serverdir (``data.operation.json``)
every 20 ms, and at the chosen step freezes and kills (SIGKILL) every process
of that session, dpkg and sentry-server's devpi-import included. Supervisord and the server
it runs are not in that session: they live on, as they would on a real host.

After the kill: ``state.apply sentry`` refuses, names the trail's backup and
``sentry_data.recover``, and starts nothing; a restarted supervisord (as at
boot) does not serve either. Then ``sentry_data.recover`` (or the upgrade
again) brings back every user, index and release file with the same sha256,
served through nginx, the package at a coherent version, ``dpkg --audit``
clean, and an apply that changes nothing. The cases share the host and leave
it as they found it (the older version, the same data): 3 to 8 minutes in
all on a 2-core machine shared with other runs. Master upgrades are killed
both ways they go (issue 17): by export and import (``method=export``) and in
place (``method=auto``: at the snapshot, in dpkg, at the new server's start); in
place the serverdir is never moved, and it must be whole after every kill.

The replica cases have a master and a replica host of their own, deployed at
the older version; the master is then upgraded (a new uuid: the replica's data
is stale, as in sentry.upgrade) and ``sentry_upgrade.replica`` is killed at
each step. The apply refuses, naming the backup and sentry_data.recover, and
initialises nothing; the upgrade run again ends with a replica that holds
what the master holds and follows it, the old data kept aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import time
from pathlib import Path

import psutil
import pytest
from support.aptrepo import use_apt_repo
from support.client import PIP_VENV, sentry_client
from support.host_roots import new_host
from support.hosts import host_address
from support.masterless import MasterlessSalt, StateRun
from support.paths import REPO
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

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
        self.host.sh(f"rm -rf /tmp/pip-download; test -x {PIP_VENV}/bin/pip || /usr/bin/python3 -m venv {PIP_VENV}")
        self.host.run(
            [
                f"{PIP_VENV}/bin/pip",
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


@pytest.fixture(scope="module")
def crashable(apt_repo, old_sentry_deb, sentry_deb, tmp_path_factory):
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    started = time.monotonic()
    with new_host("crash") as host:
        use_apt_repo(host, apt_repo)
        salt = MasterlessSalt(host, pillar(old))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        folder = tmp_path_factory.mktemp("crash-wheels")
        wheels = {}
        for number in range(WHEELS):
            target = INDEXES[number % len(INDEXES)].replace("/", "-")
            (folder / target).mkdir(exist_ok=True)
            wheel = make_wheel(folder / target, f"crash-probe-{number % 7}", f"1.{number}", payload=str(number) * 60)
            wheels[wheel.name] = hashlib.sha256(wheel.read_bytes()).hexdigest()
        for index in INDEXES:
            local = folder / index.replace("/", "-")
            inside = host.path(f"/srv/wheels/{local.name}")
            inside.mkdir(parents=True)
            for wheel in local.iterdir():
                (inside / wheel.name).write_bytes(wheel.read_bytes())
            sentry_client(host, "use", f"{NGINX_URL}/{index}")
            sentry_client(host, "login", OWNER, password=OWNER_PASSWORD)
            host.sh(f"DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /srv/wheels/{local.name}/*.whl")
        deployment = Crashable(salt, old, new, wheels)
        deployment.baseline = deployment.snapshot()
        assert len(deployment.baseline["served"]) == WHEELS, deployment.baseline["served"]
        assert deployment.baseline["served"] == deployment.baseline["on_disk"]
        assert {name.rsplit("/", 1)[1]: digest for name, digest in deployment.baseline["served"].items()} == wheels
        deployment.call("sentry_data.export", f"dest={BASE_EXPORT}")
        print(f"\ncrash host deployed at {old} with {WHEELS} release files in {time.monotonic() - started:.1f}s")
        yield deployment


@pytest.fixture
def at_baseline(crashable):
    """Each case starts from the older version serving the baseline data, with nothing left by earlier ones."""
    if crashable.host.path(TRAIL).exists():  # an earlier case failed half-way: do not fail this one for it
        crashable.salt.call("sentry_data.recover", check=False)
    crashable.clear_leftovers()
    assert crashable.version() == crashable.old
    assert not crashable.host.path(TRAIL).exists()
    assert crashable.answers(f"{SERVER_URL}/+api") and crashable.answers(f"{NGINX_URL}/+api")
    started = time.monotonic()
    yield crashable
    print(f"case took {time.monotonic() - started:.1f}s")


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


# --- the cases ------------------------------------------------------------------


def test_a_killed_export_leaves_only_an_incomplete_one_and_the_next_apply_serves_again(at_baseline):
    deployment = at_baseline
    dest = f"{HOME}/export-killed"
    operation = Operation(deployment, "sentry_data.export", f"dest={dest}")
    partial = deployment.host.path(dest + ".incomplete")
    deadline = time.monotonic() + KILL_TIMEOUT
    while not (partial.is_dir() and any(partial.iterdir())):
        assert operation.running() and not deployment.host.path(dest).exists(), operation.output()
        assert time.monotonic() < deadline
        time.sleep(POLL)
    killed = operation.kill()
    assert any("devpi-export" in command for command in killed), killed
    assert not deployment.host.path(dest).exists(), "the export completed before the kill"
    assert partial.is_dir()
    assert_not_serving(deployment)  # the export had stopped it
    listed = deployment.call("sentry_data.backups")
    assert dest + ".incomplete" not in listed["export"] and dest not in listed["export"], listed

    applied = deployment.apply()
    assert applied.succeeded, applied.failed or applied.errors
    assert applied.changed.get("sentry-supervisor-program-running"), applied.changed
    deployment.assert_as_before(deployment.old)


def test_a_killed_import_is_refused_then_recovered_with_nothing_lost(at_baseline):
    deployment = at_baseline
    operation = Operation(deployment, "sentry_data.import", BASE_EXPORT, "move_aside=True")
    trail = operation.wait_until(
        "devpi-import ran with the data aside",
        lambda operation, trail: (
            trail.get("step") == "import"
            and trail.get("backup")
            and deployment.host.path(trail["backup"]).is_dir()
            and importing(operation)
        ),
    )
    killed = operation.kill()
    assert any(runs_import(command) for command in killed), killed
    trail = operation.trail()
    backup = trail["backup"]
    assert trail["operation"] == "import" and trail["step"] == "import", trail
    assert not any(deployment.host.path(SERVERDIR).iterdir()), "the import finished before the kill"
    assert scratch_dirs(deployment), "devpi-import left nothing half made"

    # (a) the apply refuses and starts nothing; the data aside is intact
    assert_refused(deployment, trail)
    assert_not_serving(deployment)
    assert not any(deployment.host.path(SERVERDIR).iterdir())
    assert deployment.disk(backup) == deployment.baseline["on_disk"]
    # (b) nor does a supervisord started afresh, as at boot
    assert_supervisor_restart_does_not_serve(deployment)

    # (c) recover says what it did
    recovered = deployment.call("sentry_data.recover")
    print(f"recover: {recovered}")
    assert recovered["recovered"] is True and recovered["rolled_back"] is True, recovered
    assert recovered["operation"] == "import" and recovered["step"] == "import", recovered
    done = " ".join(recovered["done"])
    assert f"the data is back in {SERVERDIR}" in done and f"{PROGRAM} running" in done, recovered

    # (e) what the import had written is kept as a failed attempt, the backup went back
    listed = deployment.call("sentry_data.backups")
    assert listed["backup"] == [], listed
    assert len(listed["failed"]) == 1, listed
    failed = listed["failed"][0]
    assert failed in done, recovered
    assert any(deployment.host.path(failed).iterdir()), failed  # what devpi-import had written
    assert scratch_dirs(deployment) == []
    assert deployment.host.path(f"{BASE_EXPORT}/dataindex.json").exists()

    # (d) everything as before, and the formula agrees
    deployment.assert_as_before(deployment.old)


# (method, step it is killed at, how it is mended): each step both ways would double the time; dpkg's
# both ways. method auto goes in place here (6.14 -> 6.20: one devpi database version).
UPGRADE_CASES = [
    ("export", "export", "recover"),
    ("export", "install", "recover"),
    ("export", "install", "rerun"),
    # In the old package's prerm, on purpose (not by timing): dpkg then leaves it 'reinstreq', which a plain
    # install refuses to configure ("very bad inconsistent state"): the rerun and recover reinstall it.
    ("export", "install in prerm", "recover"),
    ("export", "install in prerm", "rerun"),
    ("export", "import", "recover"),
    ("export", "start server", "rerun"),
    ("auto", "snapshot", "recover"),
    ("auto", "install", "rerun"),
    ("auto", "start server", "recover"),
]


PRERM = "/var/lib/dpkg/info/sentry.prerm"
PRERM_ENTERED = "/tmp/sentry-test-prerm-entered"


def hold_in_prerm(deployment: Crashable) -> None:
    """The installed package's prerm, run by the upgrade's dpkg ('prerm upgrade NEW'), waits there the first
    time, having said so (PRERM_ENTERED): the kill lands inside it."""
    hold = f"[ -e {PRERM_ENTERED} ] || {{ touch {PRERM_ENTERED}; sleep 120; }}  # sentry-test-prerm\n"
    script = deployment.host.path(PRERM)
    shebang, rest = script.read_text().split("\n", 1)
    script.write_text(f"{shebang}\n{hold}{rest}")


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


def killed_as_meant(deployment: Crashable, step: str, killed: list[str]) -> None:
    """The kill at ``step`` hit what it was meant to: the prerm, dpkg, the import."""
    if step == "install in prerm":
        assert any("sentry.prerm" in command for command in killed), killed
        print(f"dpkg says: {deployment.host.run(['dpkg-query', '-W', '-f=${Status}', 'sentry']).stdout}")
    if step == "install":
        assert any("dpkg" in command for command in killed), killed
        audit = deployment.host.run(["dpkg", "--audit"], check=False).stdout.strip()
        print(f"dpkg --audit: {audit}")
        assert audit, "dpkg was not interrupted"
    if step == "import":
        assert any(runs_import(command) for command in killed), killed


@pytest.mark.parametrize(
    ("method", "step", "way"),
    UPGRADE_CASES,
    ids=[f"{'in place ' if method == 'auto' else ''}{step}-{way}" for method, step, way in UPGRADE_CASES],
)
def test_a_killed_master_upgrade_is_refused_then_mended(at_baseline, method, step, way):
    deployment = at_baseline
    upgrade = ("sentry_upgrade.master", deployment.new, "refresh=False", f"method={method}")
    if step == "snapshot":
        # A few release files are linked in milliseconds: a copied file that takes a while (its name sorts
        # first) keeps the snapshot going long enough to be killed in the middle of it.
        deployment.host.sh(f"head -c 200M /dev/zero > {SERVERDIR}/.padding && chown sentry:sentry {SERVERDIR}/.padding")
    trail_step = step.split(" in ")[0]  # "install in prerm": the step is install
    if step == "install in prerm":
        deployment.host.run(["rm", "-f", PRERM_ENTERED])
        hold_in_prerm(deployment)
    operation = Operation(deployment, *upgrade)
    operation.wait_until(f"step {step!r}", killing_point(deployment, step))
    if step == "install":
        time.sleep(0.3)  # well into dpkg's unpacking
    killed = operation.kill()
    trail = operation.trail()
    assert trail["operation"] == "upgrade" and trail["step"] == trail_step, (trail, killed)
    killed_as_meant(deployment, step, killed)
    if trail.get("backup"):
        assert deployment.disk(trail["backup"]) == deployment.baseline["on_disk"]
    if method == "auto":  # in place: the serverdir stays where it is, whole, the snapshot beside it
        assert trail.get("snapshot"), trail
        assert deployment.disk(SERVERDIR) == deployment.baseline["on_disk"]

    assert_refused(deployment, trail)
    assert not deployment.answers(f"{NGINX_URL}/+api"), "nginx was started over the trail"
    if method == "export" and trail_step in ("install", "import"):
        assert not any(deployment.host.path(SERVERDIR).iterdir()), "something was initialised over the trail"
    if step in ("start server", "health check"):
        # The server the upgrade started runs on; restarted without its upgrade, it does not serve.
        assert_supervisor_restart_does_not_serve(deployment)
    else:
        assert_not_serving(deployment)

    if way == "recover":
        recovered = deployment.call("sentry_data.recover")
        print(f"recover: {recovered}")
        assert recovered["rolled_back"] is True and recovered["step"] == trail_step, recovered
        expected = deployment.old
    else:
        result = deployment.call(*upgrade)
        print(f"rerun: recovered first {result.get('recovered_first')}; steps {result['steps']}")
        assert result["changed"] is True and result["recovered_first"]["rolled_back"] is True, result
        assert result["method"]["method"] == ("in_place" if method == "auto" else "export_import"), result
        assert result["version"] == {"old": deployment.old, "new": deployment.new}, result
        expected = deployment.new
    deployment.assert_as_before(expected)
    deployment.host.sh(f"rm -f {SERVERDIR}/.padding")
    if way == "rerun":
        back_to_old(deployment, result["backup"])


def back_to_old(deployment: Crashable, backup: str) -> None:
    """The older version on the data it had (the backup the upgrade made), for the next case."""
    host = deployment.host
    host.run(["supervisorctl", "stop", PROGRAM])
    host.sh(f"rm -rf {SERVERDIR} && mv {backup} {SERVERDIR}")
    host.run(
        ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={deployment.old}"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    applied = deployment.apply(deployment.old)
    assert applied.succeeded, applied.failed or applied.errors
    assert deployment.snapshot() == deployment.baseline


# --- a replica upgrade ------------------------------------------------------------

REPLICATED_NUMBERS = (45, 46)  # host_address() of the master and the replica
REPLICA_SECRET = "crash-replica-secret-0123456789abcdef"
BASE_REPLICA = f"{HOME}/base-replica"  # the replica's old data, for each case to start from
REPLICA_WHEELS = 8
# Every step of sentry_upgrade.replica that writes the trail and lasts long enough to be caught
# ('move data aside' is a rename between two writes of it), by the way the replica goes: in place
# when it follows its master as it is (the master upgraded in place kept its uuid), remade otherwise.
REPLICA_STEPS = {
    "in place": ("stop", "snapshot", "install", "start server", "catch up"),
    "remade": ("stop", "install", "initialise", "start server", "catch up"),
}
# (way the replica goes, step, how it is mended): the upgrade run again at each step; sentry_data.recover
# where the most is undone. In place first: the master is upgraded in place for those, then put back and
# upgraded by export for the others.
REPLICA_CASES = [
    (kind, step, way)
    for kind in ("in place", "remade")
    for step, way in (*((step, "rerun") for step in REPLICA_STEPS[kind]), ("catch up", "recover"))
]
LATE_PAYLOAD = 400_000  # random bytes (hex) in a late wheel: about 100 s through the slowed nginx


def master_pillar(version: str, replica_address: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {
                "root_password": ROOT_PASSWORD,
                "role": "primary",
                "secret": REPLICA_SECRET,
                "no_root_pypi": True,
                "offline_mode": True,
            },
            "nginx": {"replica_addresses": [replica_address]},
            "bootstrap": {"users": {OWNER: {"password": OWNER_PASSWORD}}, "indexes": {"carol/dev": {"bases": []}}},
        }
    }


def replica_pillar(version: str, master_address: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {"master_url": f"http://{master_address}", "secret": REPLICA_SECRET},
        }
    }


class Replicated:
    """A master and its replica, both deployed at the older version; the master is upgraded the way a
    case needs it (in place or by export), the replica put back at the older version on its old data."""

    def __init__(self, master: Crashable, replica: Crashable, master_address: str, folder: Path) -> None:
        self.master, self.replica, self.master_address, self.folder = master, replica, master_address, folder
        self.old_on_disk: dict[str, str] = {}  # the replica's release files before the master's upgrade
        self.uploads = 0
        self.master_method = ""  # how the master was upgraded: "auto" (in place) or "export"
        self.master_backup = ""  # the data it had at the older version, kept by its upgrade

    def upload(self, payload: str = "") -> str:
        """One more release file on the master, through its nginx; its file name."""
        self.uploads += 1
        local = self.folder / f"late-{self.uploads}"
        local.mkdir()
        wheel = make_wheel(local, "crash-late", f"2.{self.uploads}", payload=payload or f"late {self.uploads}")
        host = self.master.host
        host.path("/srv/late").mkdir(parents=True, exist_ok=True)
        host.path(f"/srv/late/{wheel.name}").write_bytes(wheel.read_bytes())
        sentry_client(host, "use", f"{NGINX_URL}/carol/dev")
        sentry_client(host, "login", OWNER, password=OWNER_PASSWORD)  # anew: the master was upgraded since
        sentry_client(host, "upload", f"/srv/late/{wheel.name}")
        return wheel.name

    def replica_serves(self, name: str, timeout: float = 60) -> None:
        """The replica's nginx lists ``name`` on carol/dev within ``timeout`` seconds."""
        self.replica.host.wait_for(
            f"curl -fsS --max-time 5 {NGINX_URL}/carol/dev/+simple/crash-late/ | grep -q {shlex.quote(name)}",
            timeout=timeout,
        )

    def status(self) -> dict | None:
        """The replica's /+status, or None when nothing answers."""
        ran = self.replica.host.run(
            ["curl", "-fsS", "--max-time", "5", "-H", "Accept: application/json", f"{SERVER_URL}/+status"],
            check=False,
        )
        return json.loads(ran.stdout)["result"] if ran.returncode == 0 else None

    def set_replica_pillar(self, version: str) -> None:
        self.replica.salt.set_pillar(replica_pillar(version, self.master_address))

    def kept_aside(self, old: dict[str, str]) -> list[str]:
        """The backups and failed attempts beside the replica's serverdir that hold its ``old`` release files."""
        listed = self.replica.call("sentry_data.backups")
        return [
            path
            for path in listed["backup"] + listed["failed"]
            if self.replica.host.path(f"{path}/+files").is_dir() and self.replica.disk(path) == old
        ]

    def master_upgraded(self, method: str) -> None:
        """The master at the newer version, upgraded with ``method``: in place ("auto") it keeps its uuid and
        the replica's old data follows it; by export it gets a new one that only a remade replica follows.
        Upgraded the other way before, it is first put back: the older version on the data it had."""
        if self.master_method == method:
            return
        master, host = self.master, self.master.host
        if self.master_backup:
            host.run(["supervisorctl", "stop", PROGRAM])
            host.sh(f"rm -rf {SERVERDIR} && mv {self.master_backup} {SERVERDIR} && rm -rf {HOME}/_data-*")
            host.run(
                ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={master.old}"],
                env={"DEBIAN_FRONTEND": "noninteractive"},
            )
            master.salt.set_pillar(master_pillar(master.old, self.replica.host.address))
            applied = master.salt.apply("sentry")
            assert applied.succeeded, applied.failed or applied.errors
        upgraded = master.call("sentry_upgrade.master", master.new, "refresh=False", f"method={method}")
        assert upgraded["changed"] is True, upgraded
        assert upgraded["method"]["method"] == ("in_place" if method == "auto" else "export_import"), upgraded
        master.salt.set_pillar(master_pillar(master.new, self.replica.host.address))
        self.master_method, self.master_backup = method, upgraded["backup"]

    def reset(self) -> dict[str, str]:
        """The replica back at the older version on its old data, following its master as far as it can;
        the release files it holds then."""
        host, replica = self.replica.host, self.replica
        if host.path(TRAIL).exists():
            replica.salt.call("sentry_data.recover", check=False)
        host.run(["supervisorctl", "stop", PROGRAM], check=False)
        host.sh(f"rm -rf {SERVERDIR} {HOME}/_data-* {HOME}/._data-* && cp -a {BASE_REPLICA} {SERVERDIR}")
        assert replica.disk(SERVERDIR) == self.old_on_disk
        if replica.version() != replica.old:
            host.run(
                ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={replica.old}"],
                env={"DEBIAN_FRONTEND": "noninteractive"},
            )
        applied = replica.apply()
        assert applied.succeeded, applied.failed or applied.errors
        assert replica.version() == replica.old
        if self.master_method == "auto":  # same uuid: it catches up with what earlier cases uploaded
            replica.call("sentry_upgrade.wait_synced", "timeout=120")
        return replica.disk(SERVERDIR)


@pytest.fixture(scope="module")
def replicated(apt_repo, old_sentry_deb, sentry_deb, tmp_path_factory):
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    master_address, replica_address = (host_address(number) for number in REPLICATED_NUMBERS)
    started = time.monotonic()
    with (
        new_host("crash-m", address=master_address) as master_host,
        new_host("crash-r", address=replica_address) as replica_host,
    ):
        for host in (master_host, replica_host):
            use_apt_repo(host, apt_repo)
        master_salt = MasterlessSalt(master_host, master_pillar(old, replica_address))
        applied = master_salt.apply("sentry")
        assert applied.succeeded, applied.failed or applied.errors
        folder = tmp_path_factory.mktemp("crash-replica-wheels")
        master_host.path("/srv/wheels").mkdir(parents=True)
        for number in range(REPLICA_WHEELS):
            wheel = make_wheel(folder, f"crash-rep-{number % 3}", f"1.{number}", payload=str(number) * 40)
            master_host.path(f"/srv/wheels/{wheel.name}").write_bytes(wheel.read_bytes())
        sentry_client(master_host, "use", f"{NGINX_URL}/carol/dev")
        sentry_client(master_host, "login", OWNER, password=OWNER_PASSWORD)
        master_host.sh("DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /srv/wheels/*.whl")
        replica_salt = MasterlessSalt(replica_host, replica_pillar(old, master_address))
        applied = replica_salt.apply("sentry")
        assert applied.succeeded, applied.failed or applied.errors
        master = Crashable(master_salt, old, new, {})
        replica = Crashable(replica_salt, old, new, {})
        deployment = Replicated(master, replica, master_address, folder)
        replica_salt.call("sentry_upgrade.wait_synced", "timeout=120")
        deployment.old_on_disk = replica.disk(SERVERDIR)
        assert len(deployment.old_on_disk) == REPLICA_WHEELS, deployment.old_on_disk
        replica_host.run(["supervisorctl", "stop", PROGRAM])
        replica_host.sh(f"cp -a {SERVERDIR} {BASE_REPLICA}")
        replica_host.run(["supervisorctl", "start", PROGRAM])
        print(f"\nreplicated hosts deployed at {old} in {time.monotonic() - started:.1f}s")
        yield deployment


SLOW_REPLICATION = "/etc/nginx/conf.d/zz-test-slow-replication.conf"


def slow_replication(master_host, slow: bool) -> None:
    """Every answer of the master's nginx at 4 kB/s (or as fast as it can again), reloaded. A reload leaves
    an answer under way at 4 kB/s until it ends."""
    if slow:
        master_host.path(SLOW_REPLICATION).write_text("limit_rate 4k;\n")
    elif master_host.path(SLOW_REPLICATION).exists():
        master_host.path(SLOW_REPLICATION).unlink()
    else:
        return
    master_host.run(["service", "nginx", "reload"])


@pytest.mark.parametrize(
    ("kind", "step", "way"),
    REPLICA_CASES,
    ids=[f"{kind.replace(' ', '-')}-{step.replace(' ', '-')}-{way}" for kind, step, way in REPLICA_CASES],
)
def test_a_killed_replica_upgrade_is_refused_then_mended_with_the_old_data_kept(replicated, kind, step, way):
    deployment = replicated
    deployment.master_upgraded("auto" if kind == "in place" else "export")
    started = time.monotonic()
    before = deployment.reset()  # the replica's release files when its upgrade begins
    replica, host, master_host = deployment.replica, deployment.replica.host, deployment.master.host
    upgrade = ("sentry_upgrade.replica", replica.new, "refresh=False", "sync_timeout=180")
    if step == "snapshot":  # a copied file that takes a while keeps the snapshot going long enough
        host.sh(f"head -c 200M /dev/zero > {SERVERDIR}/.padding && chown sentry:sentry {SERVERDIR}/.padding")
    # The server stops in a blink too: frozen, it waits out supervisor's SIGTERM until it thaws.
    frozen = host.sh(f"supervisorctl pid {PROGRAM}").stdout.strip() if step == "stop" else ""
    try:
        if step == "catch up":
            # A replica catches up in a blink: the master's nginx sends slowly (until the apply has been
            # refused), so that the kill finds it catching up: a remade one with all of the master's files,
            # one in place with a large late upload.
            slow_replication(master_host, True)
            if kind == "in place":
                deployment.upload(payload=os.urandom(LATE_PAYLOAD).hex())
        if frozen:
            host.run(["kill", "-STOP", frozen])
        operation = Operation(replica, *upgrade)
        operation.wait_until(f"step {step!r}", killing_point(replica, step))
        if step == "install":
            time.sleep(0.3)  # well into dpkg's unpacking
        killed = operation.kill()
        if frozen:
            host.run(["kill", "-CONT", frozen], check=False)
        trail = operation.trail()
        assert trail["operation"] == "replica upgrade" and trail["step"] == step, (trail, killed)
        assert_killed_replica_upgrade_refused(deployment, kind, step, trail, killed, before)
    finally:
        slow_replication(master_host, False)
        if frozen:
            host.run(["kill", "-CONT", frozen], check=False)
        host.sh(f"rm -f {SERVERDIR}/.padding")

    if way == "recover":
        assert_replica_rolled_back(deployment, step, before, kind)
    else:
        assert_replica_upgrade_rerun(deployment, kind, upgrade, before)
    print(f"case took {time.monotonic() - started:.1f}s")


def assert_killed_replica_upgrade_refused(
    deployment: Replicated, kind: str, step: str, trail: dict, killed: list[str], before: dict[str, str]
) -> None:
    """What the kill left: the old release files whole (in the serverdir or the backup it was moved to);
    an apply that refuses, naming the backup and what to run, and touches nothing; no master serving."""
    replica, host = deployment.replica, deployment.replica.host
    if step == "install":
        assert any("dpkg" in command for command in killed), killed
    if trail.get("backup") and host.path(trail["backup"]).is_dir():
        assert replica.disk(trail["backup"]) == before
    if kind == "in place":
        assert trail.get("snapshot") or step == "stop", trail
        if step in ("stop", "snapshot", "install"):  # never moved: whole, the new server not started yet
            assert replica.disk(SERVERDIR) == before
    elif not trail.get("backup"):  # not moved aside yet
        assert replica.disk(SERVERDIR) == before
    left = serverdir_listing(host)

    assert_refused(replica, trail)  # ... which changed nothing (its states say so)
    status = deployment.status()
    if status is None:  # nothing runs on the serverdir: it is as the kill left it
        assert serverdir_listing(host) == left, "the apply touched the serverdir"
    else:  # the old replica whose stop was cut short, or the new one the upgrade started: it writes as it replicates
        assert status["role"].upper() == "REPLICA", f"a master serves over the trail: {status}"
    if step in ("snapshot", "install", "initialise"):
        assert status is None, f"something serves over the trail: {status}"


def serverdir_listing(host) -> list[str]:
    """Every path below the serverdir but devpi-web's search index, which a server the killed upgrade
    started keeps up to date (it merges its segments as it pleases)."""
    return sorted(str(path) for path in host.path(SERVERDIR).rglob("*") if ".indices" not in path.parts)


def assert_replica_upgrade_rerun(deployment: Replicated, kind: str, upgrade: tuple, before: dict[str, str]) -> None:
    """The upgrade run again puts back what the killed one left, then upgrades the replica the same way."""
    replica, host = deployment.replica, deployment.replica.host
    result = replica.call(*upgrade)
    print(f"rerun: recovered first {result.get('recovered_first')}; steps {result['steps']}")
    assert result["changed"] is True and result["recovered_first"]["recovered"] is True, result
    assert result["method"]["method"] == ("in_place" if kind == "in place" else "remake"), result["method"]
    assert result["version"] == {"old": replica.old, "new": replica.new}, result
    assert replica.version() == replica.new and not host.path(TRAIL).exists()
    audit = host.run(["dpkg", "--audit"], check=False)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout + audit.stderr
    status = deployment.status()
    assert status["role"].upper() == "REPLICA", status
    # It holds what the master holds, served through its nginx, and follows it.
    assert replica.snapshot() == deployment.master.snapshot()
    late = deployment.upload()
    deployment.replica_serves(late)
    # The old data was not deleted: aside, beside the serverdir.
    assert deployment.kept_aside(before), replica.call("sentry_data.backups")
    deployment.set_replica_pillar(replica.new)
    applied = replica.apply()
    deployment.set_replica_pillar(replica.old)
    assert applied.succeeded and applied.changed == {}, applied.changed or applied.failed or applied.errors


def assert_replica_rolled_back(deployment: Replicated, step: str, before: dict[str, str], kind: str) -> None:
    """sentry_data.recover puts the replica back as it was: the older version on its old data, a replica
    (following the master as before the kill: in place it catches up again; remade it stays stale, the
    master's new uuid followed only by a remade one); what the killed upgrade had made is kept as a
    failed attempt."""
    replica, host = deployment.replica, deployment.replica.host
    recovered = replica.call("sentry_data.recover")
    print(f"recover: {recovered}")
    assert recovered["rolled_back"] is True and recovered["step"] == step, recovered
    assert replica.version() == replica.old and not host.path(TRAIL).exists()
    audit = host.run(["dpkg", "--audit"], check=False)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout + audit.stderr
    on_disk = replica.disk(SERVERDIR)
    if kind == "in place":  # it follows its master again, and may have fetched the late upload already
        assert before.items() <= on_disk.items(), (before, on_disk)
    else:
        assert on_disk == before
    status = deployment.status()
    assert status and status["role"].upper() == "REPLICA", status
    listed = replica.call("sentry_data.backups")
    assert listed["backup"] == [] and len(listed["failed"]) == 1, listed
    applied = replica.apply()
    assert applied.succeeded, applied.failed or applied.errors
    if kind == "in place":
        replica.call("sentry_upgrade.wait_synced", "timeout=120")
        assert replica.snapshot() == deployment.master.snapshot()
