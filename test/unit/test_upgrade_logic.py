"""The pure logic behind upgrades and instance settings, with Salt's loader dunders replaced by recorders.

No root, no host, no server: which instance a call is about, what /+status
means, when a replica follows its master, what a rollback undoes and what its
message tells the operator to do by hand. The real upgrades are in test_upgrade.
"""

from __future__ import annotations

import json
import os

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

settings = load("_utils/sentry_settings.py", "sentry_settings_unit")
api = load("_utils/sentry_api.py", "sentry_api_unit")
upgrade = load("_modules/sentry_upgrade.py", "sentry_upgrade_unit")
server = load("_modules/sentry_server.py", "sentry_server_upgrade_unit")
attempts = load("_utils/sentry_attempt.py", "sentry_attempt_unit")
history = load("_utils/sentry_history.py", "sentry_history_unit")
journal = load("_utils/sentry_journal.py", "sentry_journal_upgrade_unit")

CONFIG = {
    "program": "sentry-b",
    "serverdir": "/srv/b/data",
    "backup_dir": "/srv/b",
    "user": "sentry",
    "group": "sentry",
    "home": "/var/lib/sentry",
    "package": "sentry",
    "url": "http://127.0.0.1:3142",
    "master_url": "",
    "role": "standalone",
    "nginx_service": "nginx",
    "supervisor_socket": "/var/run/supervisor.sock",
    "ready_timeout": 120,
}


# --- which instance --------------------------------------------------------------


def test_the_named_instance_wins():
    assert settings.choose("sentry-b", "sentry-server", ["sentry-b", "sentry-server"]) == "sentry-b"


def test_the_pillars_instance_then_the_only_one():
    assert settings.choose(None, "sentry-server", ["sentry-b", "sentry-server"]) == "sentry-server"
    assert settings.choose(None, "sentry-server", ["sentry-b"]) == "sentry-b"


@pytest.mark.parametrize(
    ("instance", "known", "says"),
    [
        (None, [], "apply the sentry state first"),
        ("sentry-c", ["sentry-b"], "no sentry instance 'sentry-c' here; deployed: sentry-b"),
        (None, ["sentry-a", "sentry-b"], "name one with instance=PROGRAM"),
    ],
)
def test_no_guessing(instance, known, says):
    with pytest.raises(CommandExecutionError, match=says):
        settings.choose(instance, "sentry-server", known)


def test_settings_missing_a_key_say_to_apply_again(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "INSTANCES_DIR", str(tmp_path))
    (tmp_path / "sentry-b.json").write_text(json.dumps({key: CONFIG[key] for key in CONFIG if key != "url"}))
    with pytest.raises(CommandExecutionError, match="lacks url: apply the sentry state again"):
        settings.load()
    (tmp_path / "sentry-b.json").write_text(json.dumps(CONFIG))
    assert settings.load()["serverdir"] == "/srv/b/data"


# --- what /+status says --------------------------------------------------------------


def test_a_master_status():
    info = api.describe_status("http://h", {"role": "MASTER", "serial": 7, "uuid": "u1"})
    assert info == {"up": True, "url": "http://h", "role": "master", "serial": 7, "uuid": "u1", "serverdir": None}


def test_a_replica_status_names_its_master_and_lag():
    info = api.describe_status(
        "http://r",
        {"role": "REPLICA", "serial": 5, "uuid": "r1", "primary-url": "http://m", "primary-uuid": "m1",
         "primary-serial": 9, "replica-files-in-sync-at": 12.5},
    )  # fmt: skip
    assert (info["role"], info["master_url"], info["master_uuid"], info["lag"]) == ("replica", "http://m", "m1", 4)
    assert info["files_in_sync_at"] == 12.5


@pytest.mark.parametrize(
    ("replica", "follows"),
    [
        ({"master_uuid": "m1", "serial": 9}, True),
        ({"master_uuid": "m1", "serial": 8}, False),  # behind
        ({"master_uuid": "old", "serial": 12}, False),  # follows the master before its import
        ({"master_uuid": "m1", "serial": None}, False),  # has no serial yet
    ],
)
def test_a_replica_follows_only_this_master_with_all_it_has(replica, follows):
    assert api.follows(replica, {"uuid": "m1", "serial": 9}) is follows


# --- steps and rollback ----------------------------------------------------------------


def test_steps_time_each_step_by_name():
    steps = attempts.Steps()
    steps("download")
    steps("stop")
    assert steps.current == "stop"
    assert list(steps.done()) == ["download", "stop"]


def test_an_attempt_leaves_a_trail_only_once_it_changes_things(tmp_path):
    """Steps before begin() (the download) leave no trail; each change is in it before it is made."""
    serverdir = str(tmp_path / "data")
    trail = {name: getattr(journal, name) for name in ("begin", "update", "end")}
    attempt = attempts.new("replica upgrade", {**CONFIG, "serverdir": serverdir}, "6.14.0-1", "6.20.3-1", trail)
    attempt.step("download")
    assert journal.read(serverdir) is None
    attempt.step("stop")
    attempt.begin()
    attempt.mark(stopped=True)
    attempt.step("move data aside")
    attempt.mark(backup="/srv/b/_data-backup-1")
    record = journal.read(serverdir)
    assert record["operation"] == "replica upgrade" and record["step"] == "move data aside", record
    assert record["stopped"] is True and record["backup"] == "/srv/b/_data-backup-1", record
    assert (record["program"], record["version_before"], record["version"]) == ("sentry-b", "6.14.0-1", "6.20.3-1")
    assert attempt.changed == {**attempts.NOTHING_CHANGED, "stopped": True, "backup": "/srv/b/_data-backup-1"}
    second = attempts.new("upgrade", {**CONFIG, "serverdir": serverdir}, "6.14.0-1", "6.20.3-1", trail)
    with pytest.raises(FileExistsError):  # a second attempt over the first one's trail
        second.begin()
    second.end()  # its rollback ends it: the first one's trail stays
    assert journal.read(serverdir)["operation"] == "replica upgrade"
    attempt.end()
    assert journal.read(serverdir) is None


class Minion:
    """__salt__ and __utils__ of a minion where ``broken`` functions raise; records the calls.

    ``answering``: whether the instance's server answers at its URL.
    """

    def __init__(self, broken: set[str] = frozenset(), installed: str = "6.20.3-1", answering: bool = False) -> None:
        self.calls: list[str] = []
        self.broken, self.installed, self.answering = broken, installed, answering
        self.put_back_left: str | None = "/srv/b/_data-failed-1"  # where put_back moved what stood there

    def function(self, name: str):
        def call(*args, **kwargs):
            self.calls.append(name)
            if name in self.broken:
                raise CommandExecutionError(f"{name} broke")
            if name == "pkg.version":
                return self.installed
            if name == "pkg.install":
                self.installed = kwargs.get("version")
                self.install_kwargs = kwargs
            if name == "sentry_backups.put_back":
                return self.put_back_left
            if name == "sentry_api.status":
                if not self.answering:
                    raise CommandExecutionError(f"sentry at {args[0]} does not answer")
                return {"up": True, "url": args[0], "role": "master"}
            return None

        return call

    def install(self, module) -> None:
        names = ("sentry_server.stop", "sentry_server.start", "sentry_service.start", "pkg.version", "pkg.install")
        module.__salt__ = {name: self.function(name) for name in names}
        module.__utils__ = {name: self.function(name) for name in ("sentry_backups.put_back", "sentry_api.status")}
        module.__utils__["sentry_attempt.roll_back"] = attempts.roll_back  # the pure part, run for real


def state(**changed) -> dict:
    return {"stopped": False, "nginx_stopped": False, "backup": None, "installed": False, **changed}


@pytest.fixture
def backups_made(monkeypatch):
    """The backups the rollbacks below name exist (the move aside happened); others do not."""
    real = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda path: "/_data-backup-" in str(path) or real(path))


def test_a_rollback_undoes_only_what_was_changed(backups_made):
    minion = Minion()
    minion.install(upgrade)
    assert upgrade._roll_back(state(), "6.14.0-1", CONFIG) == "nothing had changed"
    assert minion.calls == []
    done = upgrade._roll_back(state(stopped=True, backup="/srv/b/_data-backup-1"), "6.14.0-1", CONFIG)
    assert done == "new data kept in /srv/b/_data-failed-1, old data back in /srv/b/data; server running"
    assert "pkg.install" not in minion.calls and "sentry_service.start" not in minion.calls
    minion.put_back_left = None  # the failed attempt wrote nothing in the serverdir: no 'kept in None'
    done = upgrade._roll_back(state(backup="/srv/b/_data-backup-2"), "6.14.0-1", CONFIG)
    assert done == "old data back in /srv/b/data"


def test_a_backup_named_but_never_made_is_not_put_back():
    """The move aside failed (a mount point: EBUSY) after the journal named the backup: the data never left."""
    minion = Minion()
    minion.install(upgrade)
    done = upgrade._roll_back(state(stopped=True, backup="/nonexistent/_data-backup-1"), "6.14.0-1", CONFIG)
    assert done == "the data never left /srv/b/data; server running"
    assert "sentry_backups.put_back" not in minion.calls and "sentry_server.stop" not in minion.calls


def test_a_failed_rollback_names_only_the_backup_it_made(backups_made):
    minion = Minion(broken={"sentry_server.start"})
    minion.install(upgrade)
    with pytest.raises(CommandExecutionError) as failed:
        upgrade._roll_back(state(stopped=True, nginx_stopped=True), "6.14.0-1", CONFIG)
    message = str(failed.value)
    assert "_data-backup" not in message and "put " not in message, message
    assert "by hand: start sentry-b, start nginx." in message  # nothing to put back: nothing to stop for

    minion = Minion(broken={"pkg.install"})
    minion.install(upgrade)
    with pytest.raises(CommandExecutionError) as failed:
        upgrade._roll_back(state(stopped=True, backup="/srv/b/_data-backup-7", installed=True), "6.14.0-1", CONFIG)
    message = str(failed.value)
    assert "old data back in /srv/b/data" in message  # put back before the install broke
    assert "_data-backup-7" not in message.split("by hand:")[1]
    assert "install sentry=6.14.0-1" in message


def test_after_a_failed_stop_the_rollback_stops_nothing():
    """The stop step failed (supervisord gone, say): if the server still answers, nothing had changed."""
    minion = Minion(broken={"sentry_server.stop"}, answering=True)
    minion.install(upgrade)
    assert upgrade._roll_back(state(stopped=True), "6.14.0-1", CONFIG) == "server still running"
    assert minion.calls == ["sentry_api.status"]

    minion = Minion(answering=False)  # it did stop: it is started again, and only that
    minion.install(upgrade)
    assert upgrade._roll_back(state(stopped=True, nginx_stopped=True), "6.14.0-1", CONFIG) == (
        "server running; nginx running"
    )
    assert "sentry_server.stop" not in minion.calls and "pkg.install" not in minion.calls


def test_the_old_release_goes_back_over_whatever_the_failed_install_left():
    """A release whose postinst failed is half-configured: Salt does not list it, so only --force-yes
    lets apt downgrade from it."""
    minion = Minion(installed="6.99.0-1")
    minion.install(upgrade)
    done = upgrade._roll_back(state(stopped=True, installed=True), "6.14.0-1", CONFIG)
    assert done == "sentry 6.14.0-1 reinstalled; server running"
    assert minion.install_kwargs == {"version": "6.14.0-1", "refresh": False, "force_yes": True}


# --- instances sharing the package ------------------------------------------------


def shared_host(monkeypatch, running: set[str], packages: dict[str, str]):
    """A host with the instances of ``packages`` (program: package); those in ``running`` run."""
    server.__utils__ = {"sentry_settings.deployed": lambda: sorted(packages)}

    def settings(name=None):
        name = name or CONFIG["program"]
        return {**CONFIG, "program": name, "package": packages[name]}

    monkeypatch.setattr(server, "settings", settings)
    monkeypatch.setattr(server, "running", lambda name=None: name in running)


def test_an_upgrade_refuses_while_another_instance_runs_from_the_package(monkeypatch):
    shared_host(monkeypatch, {"sentry-b", "sentry-server", "other"}, {"sentry-b": "sentry", "sentry-server": "sentry",
                                                         "other": "sentry-ng", "stopped": "sentry"})  # fmt: skip
    with pytest.raises(CommandExecutionError) as refused:
        server.alone("6.20.3-1")
    message = str(refused.value)
    assert message.startswith("nothing was changed: sentry-server on this host run(s) from package sentry too")
    assert "'sentry_data.export instance=NAME restart=False'" in message
    assert "'sentry_upgrade.replica 6.20.3-1 instance=NAME'" in message


def test_stopped_instances_and_other_packages_do_not_hold_an_upgrade_back(monkeypatch):
    packages = {"sentry-b": "sentry", "sentry-server": "sentry", "other": "sentry-ng"}
    shared_host(monkeypatch, {"sentry-b", "other"}, packages)
    server.alone("6.20.3-1")


def test_last_is_the_instances_own(tmp_path):
    log = tmp_path / history.FILE
    log.write_text(
        "\n".join(
            json.dumps(entry)
            for entry in (
                {"changed": True, "version": {"new": "1"}},  # written before entries named their program
                {"program": "sentry-b", "changed": True, "version": {"new": "2"}},
                {"program": "sentry-server", "changed": False, "failed_step": "stop"},
            )
        )
        + "\n"
    )
    programs = {"sentry-b": {**CONFIG, "home": str(tmp_path)}, "sentry-c": {**CONFIG, "program": "sentry-c",
                                                                            "home": str(tmp_path)}}  # fmt: skip
    upgrade.__salt__ = {"sentry_server.settings": lambda name: programs[name]}
    upgrade.__utils__ = {"sentry_history.last": history.last}
    assert upgrade.last("sentry-b")["version"] == {"new": "2"}
    assert upgrade.last("sentry-c")["version"] == {"new": "1"}


def test_the_upgrade_history_is_never_appended_through_a_link(tmp_path, caplog):
    victim = tmp_path / "root-owned"
    victim.write_text("untouched\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / history.FILE).symlink_to(victim)  # planted by the service user, whose home this is
    history.record(str(home), "sentry-server", {"changed": True})
    assert victim.read_text() == "untouched\n"
    assert "could not record the upgrade" in caplog.text
    (home / history.FILE).unlink()
    history.record(str(home), "sentry-server", {"changed": True})
    assert history.last(str(home), "sentry-server")["changed"] is True
