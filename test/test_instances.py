"""Two sentry instances on one test host, each deployed by the formula with its own pillar.

Instance A has the defaults (program sentry-server, /var/lib/sentry/data, port
3141, nginx :80); instance B its own program, serverdir, ports, nginx site and
root password, with its serverdir's parent ``/srv/sentry-b`` a filesystem of
its own (a tmpfs mounted before the deploy, root's, as a mount point is). Both
come from the local apt repository at the older version and hold a user, an
index and a few wheels.

The data modules and sentry.prune_backups act on B alone, with B's pillar and
with A's pillar plus ``instance=sentry-b``; A keeps running untouched. Both
instances run from one package: an upgrade of B refuses while A runs (it would
replace A's binaries under it). With A stopped (its data exported first), each
step of B's upgrade is made to fail for real, and the rollback undoes only
what that attempt changed and names only what that attempt made:

    download      the version is not in the repository
    stop          supervisord was killed (the server runs on without it)
    export        the filesystem beside B's serverdir is full
    install       a release whose postinst fails (the files were replaced already)
    import        a release file corrupted on disk (sha256 mismatch on import)
    start server  a devpi-server flag the old release knows and the new one dropped
    health check  a release that imports without error but loses every stage index

Then B goes over to the new version, and A is brought over with its export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.aptrepo import make_apt_repo, use_apt_repo
from support.client import sentry_client
from support.debs import deb_version
from support.host_roots import new_host
from support.hosts import NAME_PREFIX
from support.masterless import MasterlessSalt
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

A_PROGRAM, B_PROGRAM = "sentry-server", "sentry-b"
A_SERVERDIR, B_SERVERDIR = "/var/lib/sentry/data", "/srv/sentry-b/data"
A_ASIDE, B_ASIDE = "/var/lib/sentry", "/srv/sentry-b"
A_URL, B_URL = "http://127.0.0.1:3141", "http://127.0.0.1:3142"
A_PASSWORD, B_PASSWORD = "Instances-A-root-pw-3", "Instances-B-root-pw-4"
USER_PASSWORD = "Instances-user-pw-5"
B_FS_SIZE = "96m"
WHEELS = 4
MISSING_VERSION = "6.0.0-9"  # in no repository
BROKEN_INSTALL_VERSION = "6.99.0-1"  # its postinst fails
LOSES_INDEXES_VERSION = "6.98.0-1"  # the new release, whose import skips every stage index
# A flag devpi-server 6.14 knows and 6.20 dropped: the old release starts with it, the new one cannot.
DROPPED_FLAG = ["--replica-max-retries", "0"]


# --- the packages: the two releases and two broken ones, in a repository of this module's own ---------


def broken_install_deb(folder: Path) -> Path:
    """A sentry release whose installation fails in its postinst, after dpkg replaced the old files."""
    root = folder / "broken-install"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: sentry\nVersion: {BROKEN_INSTALL_VERSION}\nArchitecture: all\n"
        "Maintainer: sentry tests <tests@example.invalid>\nDescription: sentry whose postinst fails (tests)\n"
    )
    postinst = root / "DEBIAN" / "postinst"
    postinst.write_text("#!/bin/sh\necho 'sentry: this release is broken on purpose' >&2\nexit 1\n")
    postinst.chmod(0o755)
    deb = folder / f"sentry_{BROKEN_INSTALL_VERSION}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def loses_indexes_deb(folder: Path, new_deb: Path) -> Path:
    """The new release, renumbered, whose ``sentry-server --import`` skips every index of type stage.

    devpi-import then succeeds and the server starts: only a check of what
    the imported server holds can tell.
    """
    root = folder / "loses-indexes"
    subprocess.run(["dpkg-deb", "-R", str(new_deb), str(root)], check=True)
    control = root / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {LOSES_INDEXES_VERSION}", control.read_text()))
    (server_py,) = root.glob("opt/virtualenvs/sentry/lib/python3*/site-packages/sentry_commands/server.py")
    source = server_py.read_text()
    scratch_args = 'arguments = ["--serverdir", str(scratch)]'
    assert scratch_args in source, "sentry_commands/server.py changed: adapt the broken release"
    server_py.write_text(source.replace(scratch_args, scratch_args[:-1] + ', "--skip-import-type", "stage"]'))
    deb = folder / f"sentry_{LOSES_INDEXES_VERSION}_amd64.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.fixture(scope="module")
def instances_repo(sentry_deb, old_sentry_deb, tmp_path_factory) -> Path:
    """The releases and the broken ones, in a repository of this module's own (not build/apt: the broken
    ones stay out of other tests, and a run beside this one keeps its repository as it was)."""
    folder = tmp_path_factory.mktemp("instances-debs")
    debs = [sentry_deb, old_sentry_deb, broken_install_deb(folder), loses_indexes_deb(folder, sentry_deb)]
    return make_apt_repo(sentry_deb.parent / f"apt-instances{NAME_PREFIX}", debs)


# --- the host with two instances ------------------------------------------------------------------------


def pillar_a(version: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {"root_password": A_PASSWORD, "offline_mode": True},
        }
    }


def pillar_b(version: str, extra_args: list[str] | None = None) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {
                "program": B_PROGRAM,
                "serverdir": B_SERVERDIR,
                "port": 3142,
                "root_password": B_PASSWORD,
                "offline_mode": True,
                "extra_args": extra_args or [],
            },
            "nginx": {"site": "sentry-b", "port": 8080},
        }
    }


class TwoInstances:
    """The host, its masterless salt, and what can be seen of each instance."""

    def __init__(self, host, salt: MasterlessSalt, old: str, new: str) -> None:
        self.host, self.salt, self.old, self.new = host, salt, old, new
        self.a_export = ""  # A's export made before its upgrade, by the old release

    def use(self, pillar: dict) -> None:
        self.salt.set_pillar(pillar)

    def call(self, *args: str):
        ran = self.salt.call(*args, check=False)
        assert ran.returncode == 0, f"{args}: {ran.stdout[-3000:]}{ran.stderr[-3000:]}"
        return json.loads(ran.stdout)["local"]

    def fails(self, *args: str) -> str:
        """The error of a call that must fail."""
        ran = self.salt.call(*args, check=False)
        assert ran.returncode != 0, f"{args} succeeded: {ran.stdout[-3000:]}"
        return ran.stdout + ran.stderr

    def pid(self, program: str) -> int | None:
        """The program's pid under supervisor; None when it does not run."""
        ran = self.host.run(["supervisorctl", "pid", program], check=False)
        return int(ran.stdout) if ran.stdout.strip().isdigit() and int(ran.stdout) > 0 else None

    def answers(self, url: str) -> bool:
        fetched = self.host.run(["curl", "-fsS", "-o", "/dev/null", "--max-time", "10", f"{url}/+api"], check=False)
        return fetched.returncode == 0

    def package(self) -> str:
        """sentry's dpkg status and version: 'install ok installed 6.14.0-1'."""
        return self.host.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "sentry"], check=False).stdout

    def aside(self, directory: str) -> set[str]:
        """Exports and data moved aside in ``directory`` (and anything half made there)."""
        return {
            path.name
            for path in self.host.path(directory).iterdir()
            if path.name.startswith(("_data-", "export-", ".data.import-")) or path.name.endswith(".operation.json")
        }

    def content(self, url: str, serverdir: str) -> dict:
        """Users, indexes and every release file's sha256 by path: what an instance holds."""
        listed = self.host.sh(
            f"cd {serverdir}/+files && find . -type f -name '*.whl' -print0 | sort -z | xargs -0 -r sha256sum"
        ).stdout
        return {
            "users": sorted(self.call("sentry_admin.list_users", f"url={url}")),
            "indexes": sorted(self.call("sentry_admin.list_indexes", f"url={url}")),
            "files": {path: digest for digest, path in (line.split(None, 1) for line in listed.splitlines())},
        }

    def supervisor_log(self) -> str:
        return self.host.path("/var/log/supervisor/supervisord.log").read_text(errors="replace")


def fill(two: TwoInstances, url: str, password: str, user: str, wheels: Path) -> None:
    """``user`` and ``user/dev`` made by root, then the wheels uploaded by ``user``."""
    host = two.host
    inside = host.path(f"/tmp/wheels-{user}")
    shutil.copytree(wheels, inside)
    sentry_client(host, "use", url)
    sentry_client(host, "login", "root", password=password)
    sentry_client(host, "user", "-c", user, password=USER_PASSWORD)
    sentry_client(host, "index", "-c", f"{user}/dev", "bases=")
    sentry_client(host, "login", user, password=USER_PASSWORD)
    sentry_client(host, "use", f"{user}/dev")
    sentry_client(host, "upload", *sorted(f"/tmp/wheels-{user}/{wheel.name}" for wheel in wheels.iterdir()))


@pytest.fixture(scope="module")
def two(instances_repo, sentry_deb, old_sentry_deb, tmp_path_factory):
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    with new_host("instances") as host:
        host.run(["mkdir", "-p", B_ASIDE])
        host.run(["mount", "-t", "tmpfs", "-o", f"size={B_FS_SIZE},mode=0755", "sentry-b", B_ASIDE])
        use_apt_repo(host, instances_repo)
        started = time.monotonic()
        salt = MasterlessSalt(host, pillar_a(old))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        salt.set_pillar(pillar_b(old))
        second = salt.apply("sentry")
        assert second.succeeded, second.failed or second.errors
        print(f"two instances deployed in {time.monotonic() - started:.1f}s")
        deployed = TwoInstances(host, salt, old, new)
        for user, url, password in (("anna", A_URL, A_PASSWORD), ("bert", B_URL, B_PASSWORD)):
            folder = tmp_path_factory.mktemp(f"wheels-{user}")
            for number in range(WHEELS):
                # Incompressible enough that B's export needs room (see the export step below).
                make_wheel(folder, f"{user}-probe", f"1.{number}", payload=os.urandom(200_000).hex())
            fill(deployed, url, password, user, folder)
        yield deployed


# --- settings, export, import, backups, prune: B alone, A untouched -------------------------------------


def test_each_instance_reads_its_own_settings(two):
    two.use(pillar_b(two.old))
    b = two.call("sentry_server.settings")
    assert (b["program"], b["serverdir"], b["backup_dir"], b["url"]) == (B_PROGRAM, B_SERVERDIR, B_ASIDE, B_URL)
    two.use(pillar_a(two.old))
    assert two.call("sentry_server.settings", f"instance={B_PROGRAM}") == b
    assert two.call("sentry_server.settings", f"instance={A_PROGRAM}")["serverdir"] == A_SERVERDIR
    # A's pillar names no program: with two instances here, a call must name one.
    for function in ("sentry_server.settings", "sentry_admin.status", "sentry_admin.list_users"):
        assert "several sentry instances here (sentry-b, sentry-server): name one with instance=PROGRAM" in two.fails(
            function
        ), function


@pytest.mark.parametrize("how", ["b_pillar", "a_pillar_instance_b"])
def test_export_of_b_stops_b_alone(two, how):
    two.use(pillar_b(two.old) if how == "b_pillar" else pillar_a(two.old))
    instance = [] if how == "b_pillar" else [f"instance={B_PROGRAM}"]
    a_pid, b_pid, stops = two.pid(A_PROGRAM), two.pid(B_PROGRAM), two.supervisor_log().count("stopped: ")
    b_files = two.content(B_URL, B_SERVERDIR)["files"]

    exported = two.call("sentry_data.export", *instance)

    assert exported["path"].startswith(f"{B_ASIDE}/export-"), exported
    assert exported["files"] == len(b_files) == WHEELS
    assert two.pid(A_PROGRAM) == a_pid
    assert two.pid(B_PROGRAM) not in (None, b_pid)  # stopped meanwhile, running again
    stopped = two.supervisor_log().split("stopped: ")[stops + 1 :]
    assert [line.split()[0] for line in stopped] == [B_PROGRAM], stopped
    assert two.answers(B_URL)
    assert not two.aside(A_ASIDE)


def test_import_with_move_aside_lands_in_b(two):
    two.use(pillar_a(two.old))
    a_pid, b_before = two.pid(A_PROGRAM), two.content(B_URL, B_SERVERDIR)
    latest = two.call("sentry_data.backups", f"instance={B_PROGRAM}")["export"][0]

    imported = two.call("sentry_data.import", latest, "move_aside=True", f"instance={B_PROGRAM}")

    assert imported["path"] == B_SERVERDIR
    assert imported["backup"].startswith(f"{B_ASIDE}/_data-backup-"), imported
    assert two.host.path(imported["backup"]).is_dir()
    assert two.content(B_URL, B_SERVERDIR) == b_before  # running again, on the imported data
    assert two.pid(A_PROGRAM) == a_pid
    assert not two.aside(A_ASIDE)


def test_backups_are_the_instances_own(two):
    two.use(pillar_b(two.old))
    listed = two.call("sentry_data.backups")
    assert [len(listed[kind]) for kind in ("backup", "failed", "export")] == [1, 0, 2], listed
    assert all(path.startswith(f"{B_ASIDE}/") for paths in listed.values() for path in paths), listed
    two.use(pillar_a(two.old))
    assert two.call("sentry_data.backups", f"instance={B_PROGRAM}") == listed
    assert two.call("sentry_data.backups", f"instance={A_PROGRAM}") == {
        "backup": [],
        "failed": [],
        "export": [],
        "incomplete": [],
    }


def test_prune_backups_prunes_beside_b_and_nothing_of_a(two):
    two.use(pillar_a(two.old))
    a_exports = [two.call("sentry_data.export", f"instance={A_PROGRAM}")["path"] for _ in range(2)]
    two.use(pillar_b(two.old))
    listed = two.call("sentry_data.backups")

    pruned = two.salt.apply("sentry.prune_backups")

    assert pruned.succeeded, pruned.failed or pruned.errors
    assert sorted(state["name"] for state in pruned.states.values() if state["changes"]) == listed["export"][1:]
    assert two.call("sentry_data.backups") == {**listed, "export": listed["export"][:1]}
    assert two.call("sentry_data.backups", f"instance={A_PROGRAM}")["export"] == sorted(a_exports, reverse=True)


# --- the upgrade of one instance of a shared package ----------------------------------------------------


def test_an_upgrade_of_b_refuses_while_a_runs_from_the_same_package(two):
    two.use(pillar_b(two.old))
    before = (two.pid(A_PROGRAM), two.pid(B_PROGRAM), two.package(), two.aside(B_ASIDE))

    refused = two.fails("sentry_upgrade.master", two.new, "refresh=False")

    assert "nothing was changed: sentry-server on this host run(s) from package sentry too" in refused, refused
    assert f"'sentry_upgrade.replica {two.new} instance=NAME'" in refused
    assert (two.pid(A_PROGRAM), two.pid(B_PROGRAM), two.package(), two.aside(B_ASIDE)) == before


@pytest.fixture(scope="module")
def a_stopped(two):
    """A exported by the old release and left stopped: what the refusal tells the operator to do first."""
    two.use(pillar_a(two.old))
    two.a_before = two.content(A_URL, A_SERVERDIR)
    exported = two.call("sentry_data.export", f"instance={A_PROGRAM}", "restart=False")
    two.a_export = exported["path"]
    assert two.pid(A_PROGRAM) is None
    return two


# --- each failed step of B's upgrade rolls back what it changed, and only that ---------------------------


class Attempt:
    """What B looked like before a failed upgrade, to compare with after; the error it raised."""

    def __init__(self, two: TwoInstances, version: str) -> None:
        self.two, self.version = two, version
        two.use(pillar_b(two.old))
        self.package, self.aside = two.package(), two.aside(B_ASIDE)
        self.content = two.content(B_URL, B_SERVERDIR)
        self.pid = two.pid(B_PROGRAM)
        self.error = ""

    def run(self, *args: str) -> str:
        started = time.monotonic()
        self.error = self.two.fails("sentry_upgrade.master", self.version, "refresh=False", "method=export", *args)
        print(f"failed attempt to {self.version} in {time.monotonic() - started:.1f}s: {self.error[-1500:]}")
        return self.error

    def made(self) -> set[str]:
        return self.two.aside(B_ASIDE) - self.aside

    def check_rolled_back(self, step: str) -> None:
        """The error names ``step``; B is back as it was; every path the message names this attempt made."""
        two = self.two
        two.use(pillar_b(two.old))
        assert f"upgrade to {self.version} failed at step '{step}'" in self.error, self.error
        assert two.package() == self.package
        assert two.answers(B_URL)
        assert two.content(B_URL, B_SERVERDIR) == self.content
        assert two.pid(A_PROGRAM) is None  # A stays as the operator left it
        assert not self.two.host.path(f"{B_SERVERDIR}.operation.json").exists()
        # What it names of its own, not the incomplete export devpi's traceback names (removed since).
        named = set(re.findall(r"/srv/sentry-b/((?:_data-[a-z]+|export)-[0-9-]+)(?![0-9-]*\.incomplete)", self.error))
        assert named <= self.made(), (named, self.made())
        assert not any(name.startswith("_data-backup-") for name in named), self.error  # put back, gone
        last = two.call("sentry_upgrade.last")
        assert (last["program"], last["failed_step"]) == (B_PROGRAM, step), last


def test_failed_download_changes_nothing(a_stopped):
    attempt = Attempt(a_stopped, MISSING_VERSION)
    attempt.run()
    attempt.check_rolled_back("download")
    assert "Rolled back: nothing had changed" in attempt.error
    assert a_stopped.pid(B_PROGRAM) == attempt.pid  # nothing was stopped
    assert attempt.made() == set()


def test_failed_stop_rolls_back_nothing(a_stopped):
    two = a_stopped
    attempt = Attempt(two, two.new)
    supervisord = int(two.host.run(["supervisorctl", "pid"]).stdout)
    two.host.run(["kill", "-KILL", str(supervisord)])  # the server runs on without it
    try:
        attempt.run()
        assert "supervisord does not answer" in attempt.error
        assert "Rolled back: server still running" in attempt.error
        assert "ROLLBACK FAILED" not in attempt.error
        assert two.host.run(["kill", "-0", str(attempt.pid)], check=False).returncode == 0  # never stopped
        assert attempt.made() == set()
    finally:
        two.host.run(["kill", str(attempt.pid)], check=False)
        two.host.wait_for(f"! kill -0 {attempt.pid} 2>/dev/null", timeout=30)
        two.call("sentry_service.start", "supervisor")
        two.use(pillar_a(two.old))
        two.call("sentry_server.stop", f"instance={A_PROGRAM}")  # autostarted with supervisord
        two.call("sentry_server.start", f"instance={B_PROGRAM}")  # returns once it answers
    attempt.pid = two.pid(B_PROGRAM)
    attempt.check_rolled_back("stop")


def test_failed_export_starts_the_server_again(a_stopped):
    two = a_stopped
    attempt = Attempt(two, two.new)
    export_bytes = int(two.host.run(["du", "-sb", f"{B_SERVERDIR}/+files"]).stdout.split()[0])  # at least
    free = int(two.host.run(["df", "--output=avail", "-B1", B_ASIDE]).stdout.split()[-1])
    ballast = f"{B_ASIDE}/ballast"
    two.host.run(["fallocate", "-l", str(free - export_bytes // 2), ballast])  # room for half an export
    try:
        attempt.run()
    finally:
        two.host.run(["rm", "-f", ballast])
    attempt.check_rolled_back("export")
    assert "No space left on device" in attempt.error
    assert "Rolled back: server running; nginx running" in attempt.error
    assert attempt.made() == set()  # the incomplete export is gone too
    assert two.pid(B_PROGRAM) != attempt.pid


def test_failed_install_puts_the_old_release_back(a_stopped):
    attempt = Attempt(a_stopped, BROKEN_INSTALL_VERSION)
    attempt.run()
    attempt.check_rolled_back("install")
    assert "Problem encountered installing package(s)" in attempt.error
    assert "dpkg returned an error code (1)" in attempt.error
    assert f"old data back in {B_SERVERDIR}; sentry {a_stopped.old} reinstalled; server running" in attempt.error
    assert {name.split("-")[0] for name in attempt.made()} == {"export"}  # its export stays, nothing else


def test_failed_import_puts_the_data_back(a_stopped):
    two = a_stopped
    victim = two.host.sh(f"find {B_SERVERDIR}/+files -type f -name '*.whl' | sort | head -1").stdout.strip()
    original = two.host.path(victim).read_bytes()
    two.host.path(victim).write_bytes(original + b"corrupted on disk")
    try:
        attempt = Attempt(two, two.new)
        attempt.run()
        attempt.check_rolled_back("import")
        assert "sha256 mismatch" in attempt.error
    finally:
        two.host.path(victim).write_bytes(original)


def test_failed_start_puts_data_and_release_back(a_stopped):
    two = a_stopped
    two.use(pillar_b(two.old, extra_args=DROPPED_FLAG))
    assert two.salt.apply("sentry.supervisor").succeeded  # the old release starts with it
    try:
        attempt = Attempt(two, two.new)
        two.use(pillar_b(two.old, extra_args=DROPPED_FLAG))
        attempt.run()
        attempt.check_rolled_back("start server")
        assert "unrecognized arguments: --replica-max-retries" in attempt.error
        failed = [name for name in attempt.made() if name.startswith("_data-failed-")]
        assert len(failed) == 1 and f"{B_ASIDE}/{failed[0]}" in attempt.error  # the new data, kept
    finally:
        two.use(pillar_b(two.old))
        assert two.salt.apply("sentry.supervisor").succeeded


def test_failed_health_check_puts_data_and_release_back(a_stopped):
    attempt = Attempt(a_stopped, LOSES_INDEXES_VERSION)
    attempt.run()
    attempt.check_rolled_back("health check")
    assert "does not hold what" in attempt.error and "index bert/dev is missing" in attempt.error, attempt.error
    failed = [name for name in attempt.made() if name.startswith("_data-failed-")]
    assert len(failed) == 1 and f"{B_ASIDE}/{failed[0]}" in attempt.error


def test_b_upgrades_then_a_comes_over_with_its_export(a_stopped):
    two = a_stopped
    two.use(pillar_a(two.old))
    b_before = two.content(B_URL, B_SERVERDIR)

    upgraded = two.call("sentry_upgrade.master", two.new, "refresh=False", "method=export", f"instance={B_PROGRAM}")

    assert upgraded["changed"] is True and upgraded["version"] == {"old": two.old, "new": two.new}
    assert upgraded["backup"].startswith(f"{B_ASIDE}/_data-backup-") and two.host.path(upgraded["backup"]).is_dir()
    assert upgraded["export"]["path"].startswith(f"{B_ASIDE}/export-")
    assert two.content(B_URL, B_SERVERDIR) == b_before
    assert two.call("sentry_server.version", f"instance={B_PROGRAM}")["server"] == two.new.split("-")[0]
    assert two.call("sentry_upgrade.last", f"instance={B_PROGRAM}")["backup"] == upgraded["backup"]
    assert two.call("sentry_upgrade.last", f"instance={A_PROGRAM}") is None  # A never went through one

    imported = two.call("sentry_data.import", two.a_export, "move_aside=True", f"instance={A_PROGRAM}")
    assert imported["backup"].startswith(f"{A_ASIDE}/_data-backup-")
    two.call("sentry_server.start", f"instance={A_PROGRAM}")
    assert two.content(A_URL, A_SERVERDIR) == two.a_before
    assert two.call("sentry_server.version", f"instance={A_PROGRAM}")["server"] == two.new.split("-")[0]
