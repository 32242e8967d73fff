"""Backups and drills without a server: which backups rotation removes, the records' shape, the drill's port.

No root, no host: backups are folders in a temporary directory, the real
sentry_backups and sentry_records utils, and ``sentry_data.export`` a
recorder (with Salt's loader mocks). A real backup, drill and cron run are in
test_backup.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import stat

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

backup = load("_modules/sentry_backup.py", "sentry_backup_unit")
backups = load("_utils/sentry_backups.py", "sentry_backups_backup_unit")
records = load("_utils/sentry_records.py", "sentry_records_unit")

PROGRAM = "sentry-b"
STAMPS = ("20260101-020000", "20260102-020000", "20260102-020000-1", "20260103-020000")


# --- rotation -------------------------------------------------------------------------------


def test_named_lists_folders_of_a_prefix_newest_first_and_nothing_else(tmp_path):
    for stamp in STAMPS:
        (tmp_path / f"backup-{stamp}").mkdir()
    (tmp_path / "backup-20260104-020000").write_text("a file, not a backup")
    (tmp_path / "export-20260105-020000").mkdir()
    found = [os.path.basename(path) for path in backups.named(str(tmp_path), "backup-")]
    # the same second twice: new_named appends -1, which sorts after (newer than) the first
    assert found == [f"backup-{stamp}" for stamp in reversed(STAMPS)]
    assert backups.named(str(tmp_path / "nowhere"), "backup-") == []


@pytest.mark.parametrize(("keep", "removed"), [(1, 3), (2, 2), (4, 0), (9, 0), (0, 3)])
def test_rotation_removes_all_but_the_newest_keep_and_never_the_newest(keep, removed):
    paths = [f"/b/backup-{stamp}" for stamp in reversed(STAMPS)]
    gone = backups.beyond(paths, keep)
    assert gone == paths[len(paths) - removed :]
    assert paths[0] not in gone


def test_a_new_name_never_takes_an_existing_one(tmp_path):
    first = backups.new_named(str(tmp_path), "backup-")
    os.mkdir(first)
    second = backups.new_named(str(tmp_path), "backup-")
    assert second != first and os.path.basename(second).startswith("backup-")


# --- records --------------------------------------------------------------------------------


def test_an_entry_says_when_how_long_what_and_whether_it_worked():
    started = 1_767_232_800.25  # 2026-01-01T02:00:00.25Z
    done = records.entry(started, 4.567, path="/b/backup-1", counts={"files": 3}, write_pause_seconds=0.0)
    assert done == {
        "time": "2026-01-01T02:00:00+00:00",
        "timestamp": 1_767_232_800.25,
        "success": True,
        "seconds": 4.57,
        "path": "/b/backup-1",
        "counts": {"files": 3},
        "error": None,
        "write_pause_seconds": 0.0,
    }
    failed = records.entry(started, 1, error="disk full")
    assert failed["success"] is False and failed["error"] == "disk full" and failed["path"] is None
    assert datetime.datetime.fromisoformat(failed["time"]).timestamp() == int(started)


def test_a_failure_keeps_the_last_success(tmp_path):
    serverdir = str(tmp_path / "data")
    assert records.read(serverdir) == {}
    good = records.entry(100, 1, path="/b/backup-1")
    bad = records.entry(200, 1, error="boom")
    records.write(serverdir, "backup", good)
    written = records.write(serverdir, "backup", bad)
    assert written == {"backup": {"last": bad, "last_success": good}}
    drilled = records.entry(300, 2, path="/b/backup-1")
    assert records.write(serverdir, "drill", drilled)["drill"] == {"last": drilled, "last_success": drilled}
    assert records.read(serverdir)["backup"]["last"] == bad
    assert records.path(serverdir) == serverdir + ".backups.json"
    assert stat.S_IMODE(os.stat(records.path(serverdir)).st_mode) == 0o644
    assert not os.path.exists(records.path(serverdir) + ".partial")
    with pytest.raises(ValueError, match="not 'upgrade'"):
        records.merged({}, "upgrade", good)


def test_records_are_never_written_through_a_link_the_service_user_planted(tmp_path):
    victim = tmp_path / "root-owned"
    victim.write_text("untouched")
    os.chmod(victim, 0o600)
    serverdir = str(tmp_path / "data")
    os.symlink(victim, records.path(serverdir) + ".partial")  # where root writes first, in the user's folder
    records.write(serverdir, "backup", records.entry(100, 1, path="/b/backup-1"))
    assert victim.read_text() == "untouched" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert records.read(serverdir)["backup"]["last"]["path"] == "/b/backup-1"


def test_unreadable_records_read_as_none(tmp_path):
    serverdir = str(tmp_path / "data")
    with open(records.path(serverdir), "w") as handle:
        handle.write("{half")
    assert records.read(serverdir) == {}


# --- the drill's port ----------------------------------------------------------------------


def test_the_drill_port_is_free_and_not_one_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = backup.free_port()
        assert port != taken and 1024 < port < 65536
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # nothing holds it


# --- run: export, rotate, record (loader mocks) ---------------------------------------------


class Exporter:
    """sentry_data.export: makes the folder it is given, or fails ``failures`` times first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.calls = failures, []

    def __call__(self, dest, stop, instance):
        self.calls.append({"dest": dest, "stop": stop, "instance": instance})
        if len(self.calls) <= self.failures:
            raise CommandExecutionError("devpi-export failed (exit 1): fatal: The file for alice/dev/... is missing.")
        os.mkdir(dest)
        return {"path": dest, "users": 2, "indexes": 3, "files": 4, "root_pypi": True, "seconds": 0.5}


@pytest.fixture
def instance(tmp_path, monkeypatch):
    folder = tmp_path / "backups"
    serverdir = tmp_path / "data"
    monkeypatch.setattr(backup, "SETTINGS_DIR", str(tmp_path / "etc"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / f"{PROGRAM}.json").write_text(json.dumps({"dir": str(folder), "keep": 2, "live": True}))
    monkeypatch.setattr(backup.time, "sleep", lambda seconds: None)
    exporter = Exporter()
    backup.__salt__ = {
        "sentry_server.settings": lambda instance=None: {"program": PROGRAM, "serverdir": str(serverdir)},
        "sentry_data.export": exporter,
        "sentry_health.export_state": lambda path: {"users": {"alice": {}}, "made_from": path},
    }
    backup.__utils__ = {
        "sentry_backups.named": backups.named,
        "sentry_backups.beyond": backups.beyond,
        "sentry_backups.new_named": backups.new_named,
        "sentry_records.entry": records.entry,
        "sentry_records.write": records.write,
        "sentry_records.read": records.read,
    }
    return {"folder": folder, "serverdir": str(serverdir), "exporter": exporter}


def test_a_backup_keeps_the_newest_and_records_it(instance):
    folder = instance["folder"]
    folder.mkdir()
    for stamp in STAMPS[:3]:
        (folder / f"backup-{stamp}").mkdir()
    (folder / "backup-20260101-010000.incomplete").mkdir()  # a killed export's
    done = backup.run(instance=PROGRAM)
    assert instance["exporter"].calls[0]["stop"] is False  # live: the server keeps serving
    assert (
        done["success"]
        and done["write_pause_seconds"] == 0.0
        and done["counts"] == {"users": 2, "indexes": 3, "files": 4}
    )
    assert sorted(os.listdir(folder)) == sorted([".lock", os.path.basename(done["path"]), f"backup-{STAMPS[2]}"])
    with open(os.path.join(done["path"], backup.MANIFEST)) as manifest:
        assert json.load(manifest) == {"users": {"alice": {}}, "made_from": done["path"]}
    assert len(done["removed"]) == 3
    assert backup.last(PROGRAM)["backup"]["last_success"] == done


def test_a_live_backup_is_tried_again_and_a_stopped_one_pauses(instance):
    instance["exporter"].failures = 1
    assert backup.run(instance=PROGRAM)["success"]
    assert len(instance["exporter"].calls) == 2
    stopped = backup.run(instance=PROGRAM, live=False)
    assert instance["exporter"].calls[-1]["stop"] is True and stopped["write_pause_seconds"] == 0.5


def test_a_failed_backup_is_recorded_then_raised(instance):
    instance["exporter"].failures = 99
    with pytest.raises(CommandExecutionError, match=r"backup of sentry-b failed: .*is missing"):
        backup.run(instance=PROGRAM)
    assert len(instance["exporter"].calls) == backup.LIVE_ATTEMPTS
    last = backup.last(PROGRAM)["backup"]
    assert last["last"]["success"] is False and "is missing" in last["last"]["error"] and "last_success" not in last


def test_without_settings_it_says_what_to_apply(instance, tmp_path):
    os.remove(tmp_path / "etc" / f"{PROGRAM}.json")
    with pytest.raises(CommandExecutionError, match=r"sentry:backup:enabled: true and apply sentry.backup"):
        backup.run(instance=PROGRAM)


def test_a_drill_without_a_backup_says_so_and_is_recorded(instance):
    with pytest.raises(CommandExecutionError, match=r"no backup in .* run sentry_backup.run first"):
        backup.drill(instance=PROGRAM)
    assert backup.last(PROGRAM)["drill"]["last"]["success"] is False


def test_root_never_writes_through_a_link_in_the_backup_folder(tmp_path):
    """The lock, a backup's manifest and a drill's server log: root opens them in folders the service user
    may write in; a link put at their names is never followed (the root-owned file stays as it was)."""
    victim = tmp_path / "root-owned"
    victim.write_text("untouched")
    for name, flags, mode in (
        ("lock", os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a"),
        ("server.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, "wb"),
    ):
        os.symlink(victim, tmp_path / name)
        with pytest.raises(OSError):
            backup._opened(str(tmp_path / name), flags, mode)
    export = tmp_path / "backup-20260101-020000"
    export.mkdir()
    os.symlink(victim, export / backup.MANIFEST)
    backup.__salt__ = {"sentry_health.export_state": lambda path: {"users": {}}}
    backup._write_manifest(str(export))  # the link itself goes; the manifest is a file of its own
    assert victim.read_text() == "untouched"
    assert not os.path.islink(export / backup.MANIFEST)
    assert json.loads((export / backup.MANIFEST).read_text()) == {"users": {}}
