"""sentry_recover with Salt's loader mocks: what a trail left by a killed import or upgrade is mended into.

No root, no host: the trail and the data moved aside are real files in a
temporary folder (the real sentry_journal and sentry_backups utils), the
server, dpkg and pkg.install are recorders. What a real kill -9 leaves, and
how recover mends it on a deployed host, is in test_crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

recover = load("_modules/sentry_recover.py", "sentry_recover_unit")
data = load("_modules/sentry_data.py", "sentry_data_unit")
journal = load("_utils/sentry_journal.py", "sentry_journal_recover_unit")
backups = load("_utils/sentry_backups.py", "sentry_backups_recover_unit")

PROGRAM = "sentry-b"


class Host:
    """The instance's program, dpkg-query's answers in turn, and what was asked of them."""

    def __init__(self, serverdir: str, *dpkg: tuple[str, int]) -> None:
        self.config = {"serverdir": serverdir, "program": PROGRAM, "package": "sentry", "nginx_service": "nginx"}
        self.running = True
        self.dpkg, self.installs, self.calls = list(dpkg), [], []

    def settings(self, instance=None):
        self.calls.append(("settings", instance))
        return self.config

    def run_all(self, argv, **kwargs) -> dict:
        if argv[:2] == ["apt-get", "install"]:
            self.installs.append(argv)
        if argv[0] != "dpkg-query":
            return {"retcode": 0, "stdout": "", "stderr": ""}
        stdout, code = self.dpkg.pop(0)
        return {"retcode": code, "stdout": stdout, "stderr": ""}

    def server(self, function):
        def call(instance):
            self.calls.append((function, instance))
            was, self.running = self.running, {"stop": False, "start": True}.get(function, self.running)
            return was

        return call

    def functions(self) -> dict:
        return {
            "sentry_server.settings": self.settings,
            **{f"sentry_server.{f}": self.server(f) for f in ("running", "stop", "start")},
            "sentry_service.start": lambda name: self.calls.append(("service.start", name)),
            "cmd.run_all": self.run_all,
            "pkg.install": lambda *args, **kwargs: self.installs.append(("pkg.install", args, kwargs)),
        }


@pytest.fixture
def serverdir(tmp_path) -> str:
    path = tmp_path / "data"
    path.mkdir()
    (path / "half-imported").write_text("what the killed import wrote")
    return str(path)


@pytest.fixture
def host(serverdir) -> Host:
    return Host(serverdir)


@pytest.fixture
def configure_loader_modules(host):
    utils = {
        **{f"sentry_journal.{f}": getattr(journal, f) for f in ("read", "alive", "end", "describe")},
        **{
            f"sentry_backups.{f}": getattr(backups, f) for f in ("put_back", "import_scratch", "new_path", "incomplete")
        },
    }
    return {
        recover: {"__salt__": host.functions(), "__utils__": utils},
        data: {"__salt__": {"sentry_recover.recover": recover.recover}},
    }


def killed(serverdir: str, **facts) -> dict:
    """The trail an operation on ``serverdir`` leaves when it is killed: its owner is gone."""
    journal.begin(serverdir, facts.pop("operation", "import"), **facts)
    return journal.update(serverdir, pid=2**22 + 1)  # above Linux's pid_max: no process has it


def test_without_a_trail_nothing_is_done(host, serverdir):
    expected = {"recovered": False, "comment": f"no interrupted operation on {serverdir}", "done": []}
    assert recover.recover(PROGRAM) == expected
    assert host.calls == [("settings", PROGRAM)]


def test_without_a_trail_a_killed_snapshot_left_behind_is_removed(host, serverdir, tmp_path):
    """An older release, or a snapshot killed after its trail went: nothing names it, it still holds the disk."""
    unfinished = tmp_path / "._data-backup-20260101-120000.incomplete"
    (unfinished / "+files").mkdir(parents=True)
    other = tmp_path / "._b-backup-20260101-120000.incomplete"  # another instance's, beside it
    other.mkdir()
    result = recover.recover(PROGRAM)
    assert result["done"] == [f"the unfinished snapshot {unfinished} is removed (links and copies of {serverdir})"]
    assert not unfinished.exists() and other.exists()
    assert host.calls == [("settings", PROGRAM)]  # nothing stopped or started


def test_a_running_operation_is_left_alone(host, serverdir):
    journal.begin(serverdir, "import")  # owned by this live process
    with pytest.raises(CommandExecutionError, match=r"the import is still running \(pid \d+\)"):
        recover.recover()
    assert ("stop", PROGRAM) not in host.calls
    journal.end(serverdir)


def test_a_killed_import_is_rolled_back_with_nothing_deleted(host, serverdir, tmp_path):
    backup = tmp_path / "_data-backup-20260101-120000"
    backup.mkdir()
    (backup / ".nodeinfo").write_text("{}")
    scratch = tmp_path / ".data.import-x1"
    scratch.mkdir()
    killed(serverdir, step="import", backup=str(backup), was_running=True)

    result = recover.recover(PROGRAM)

    assert result["recovered"] is True and result["rolled_back"] is True, result
    assert (result["operation"], result["step"]) == ("import", "import")
    assert os.listdir(serverdir) == [".nodeinfo"] and not backup.exists()
    failed = sorted(str(path) for path in tmp_path.glob("_data-failed-*"))
    assert len(failed) == 2, failed  # what stood in the serverdir, and the import's scratch dir
    assert any((tmp_path / name / "half-imported").exists() for name in os.listdir(tmp_path) if "failed" in name)
    assert result["done"][0] == f"{PROGRAM} stopped" and result["done"][-1] == f"{PROGRAM} running"
    assert f"the data is back in {serverdir}" in result["done"][1]
    assert f"what the interrupted import had written is in {failed[1]}" in result["done"], result["done"]
    assert journal.read(serverdir) is None
    assert host.installs == [] and ("service.start", "nginx") not in host.calls


def test_an_upgrade_past_its_health_check_is_completed(host, serverdir, tmp_path):
    backup = tmp_path / "_data-backup-20260101-120000"
    backup.mkdir()
    killed(
        serverdir,
        operation="upgrade",
        step="health",
        backup=str(backup),
        healthy=True,
        installed=True,
        version_before="6.14.0-1",
        nginx_stopped=True,
        was_running=False,
    )
    host.running = False

    result = recover.recover()

    assert result["completed"] is True and "rolled_back" not in result, result
    assert result["done"] == [f"{PROGRAM} running", "nginx running"]
    assert backup.exists() and os.listdir(serverdir) == ["half-imported"]  # the upgraded data stays
    assert host.installs == [] and journal.read(serverdir) is None


def test_a_server_that_was_stopped_stays_stopped(host, serverdir):
    killed(serverdir, step="import", was_running=False)
    host.running = False
    assert recover.recover()["done"] == []
    assert ("start", PROGRAM) not in host.calls


def test_sentry_data_recover_hands_over_with_the_instance(host, serverdir):
    assert data.recover("sentry-b")["recovered"] is False
    assert data.recover(instance="sentry-c")["recovered"] is False
    assert host.calls == [("settings", "sentry-b"), ("settings", "sentry-c")]


# --- the package a killed dpkg left ----------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        (("install ok installed\t6.14.0-1", 0), ("installed", "6.14.0-1")),
        (("hold ok installed\t6.14.0-1", 0), ("installed", "6.14.0-1")),
        # what a kill -9 of dpkg while it unpacks 6.20.3-1 over 6.14.0-1 leaves (pkg.version says 6.14.0-1)
        (("install reinstreq half-installed\t6.14.0-1", 0), ("install reinstreq half-installed", "6.14.0-1")),
        (("install ok half-configured\t6.20.3-1", 0), ("install ok half-configured", "6.20.3-1")),
        (("", 1), ("not-installed", "")),
    ],
)
def test_only_a_complete_package_counts_as_installed(host, answer, state):
    host.dpkg = [answer]
    assert recover._dpkg_state("sentry") == state


def test_a_half_installed_package_is_reinstalled_at_the_version_it_started_from(host):
    trail = {"installed": True, "version_before": "6.14.0-1", "backup": None}
    host.dpkg = [("install reinstreq half-installed\t6.14.0-1", 0), ("install ok installed\t6.14.0-1", 0)]
    assert recover._put_back_package(trail, "sentry") == ["sentry 6.14.0-1 reinstalled"]
    # apt-get with --reinstall, not pkg.install: a package killed in a maintainer script (reinstreq) is no
    # installed package to Salt, which then asks apt for a plain install, and dpkg refuses to configure it.
    assert host.installs == [["apt-get", "install", "-y", "-q", "--reinstall", "--allow-downgrades", "sentry=6.14.0-1"]]

    host.dpkg = [("install reinstreq half-installed\t6.14.0-1", 0)] * 2
    with pytest.raises(CommandExecutionError, match=r"apt-get install --reinstall --allow-downgrades sentry=6.14.0-1"):
        recover._put_back_package(trail, "sentry")

    host.installs.clear()
    host.dpkg = [("install ok installed\t6.14.0-1", 0)]
    assert recover._put_back_package(trail, "sentry") == []
    assert recover._put_back_package({**trail, "installed": False}, "sentry") == []
    assert host.installs == []


def test_an_in_place_upgrade_killed_while_it_made_its_snapshot_leaves_the_serverdir_as_it_was(
    host, serverdir, tmp_path
):
    snapshot = tmp_path / "_data-backup-20260101-120000"
    unfinished = tmp_path / "._data-backup-20260101-120000.incomplete"
    unfinished.mkdir()
    (unfinished / ".sqlite").write_text("half copied")
    killed(serverdir, operation="upgrade", step="snapshot", snapshot=str(snapshot), stopped=True, nginx_stopped=True)

    result = recover.recover(PROGRAM)

    assert result["rolled_back"] is True and result["step"] == "snapshot", result
    assert os.listdir(serverdir) == ["half-imported"]  # untouched: nothing was put back over it
    assert not unfinished.exists() and not snapshot.exists() and not list(tmp_path.glob("_data-failed-*"))
    removed = f"the unfinished snapshot {unfinished} is removed (links and copies of {serverdir})"
    assert removed in result["done"], result["done"]
    assert ("start", PROGRAM) in host.calls and ("service.start", "nginx") in host.calls
    assert journal.read(serverdir) is None


def test_an_unreadable_trail_is_refused_and_kept(host, serverdir):
    trail = Path(f"{serverdir}.operation.json")
    trail.write_text("{half")
    with pytest.raises(CommandExecutionError, match=r"operation\.json, which cannot be read"):
        recover.recover(PROGRAM)
    assert trail.read_text() == "{half"
    assert host.running  # nothing stopped or started
