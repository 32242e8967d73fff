"""Backups that are known to restore: sentry_admin.backup, sentry_admin.verify_backup and sentry.backup's cron.

A standalone host deployed with ``backup:enabled`` (schedules off at first)
holds users and a private index with uploaded wheels. A backup, then a drill
of it, pass and are recorded. A copy of the backup with one release file's
bytes damaged, and another with a user dropped from its dataindex, fail
their drills naming the file and the user; the scratch folder and the
scratch server are gone afterwards and the live server is untouched. Then
the schedules are set to every minute and cron itself runs the backup and the
drill, on this host (systemd installed, not running) and on a host without
systemd; a re-apply and a dry run change nothing.

The restore of docs/backups-and-monitoring.md is run there command by command.
Runtime: about 6 minutes (two deployments, cron's minute twice).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.client import sentry_client
from support.host_roots import new_host
from support.masterless import MasterlessSalt, StateRun
from support.paths import REPO
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

ROOT_PASSWORD = "Backup-Root-pw-7"
PASSWORDS = {"alice": "Backup-Alice-pw-8", "carol": "Backup-Carol-pw-9"}
WHEELS = 6
FOLDER = "/var/lib/sentry/backups/sentry-server"
RECORDS = "/var/lib/sentry/data.backups.json"
CRON_WAIT = 150  # cron's minute, plus a backup and a drill


def pillar(deb: Path, schedule: str = "", drill_schedule: str = "") -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": {
                "users": {name: {"password": password} for name, password in PASSWORDS.items()},
                "indexes": {"alice/dev": {"bases": [], "acl_upload": ["alice"]}},
            },
            "backup": {
                "enabled": True,
                "keep": 2,
                "schedule": schedule,
                "drill_schedule": drill_schedule,
            },
            "cron": {"salt_call": str(REPO / ".venv" / "bin" / "salt-call")},
        }
    }


def call(salt: MasterlessSalt, *args: str):
    return json.loads(salt.call(*args).stdout)["local"]


def failure(salt: MasterlessSalt, *args: str) -> str:
    done = salt.call(*args, check=False)
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr


def deploy(salt: MasterlessSalt) -> None:
    run = salt.apply("sentry")
    assert run.succeeded, run.failed or run.errors


@pytest.fixture(scope="module")
def deployed(sentry_deb, tmp_path_factory):
    with new_host("backup") as host:
        salt = MasterlessSalt(host, pillar(sentry_deb))
        deploy(salt)
        wheels = tmp_path_factory.mktemp("backup-wheels")
        for number in range(WHEELS):
            make_wheel(wheels, f"backup-probe-{number % 3}", f"1.{number}", payload=f"backup-{number}" * 50)
        folder = host.path("/tmp/wheels")
        folder.mkdir()
        for wheel in wheels.iterdir():
            (folder / wheel.name).write_bytes(wheel.read_bytes())
        sentry_client(host, "use", "http://127.0.0.1:3141/alice/dev")
        sentry_client(host, "login", "alice", password=PASSWORDS["alice"])
        host.sh("DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /tmp/wheels/*.whl")
        yield salt


def leftovers(salt: MasterlessSalt) -> str:
    """Scratch folders and scratch servers of drills ('' when there are none)."""
    host = salt.host
    scratch = [path.name for path in host.path(FOLDER).iterdir() if path.name.startswith(".drill-")]
    servers = host.run(["pgrep", "-af", f"{FOLDER}/.drill-"], check=False).stdout.strip()
    return " ".join(scratch) + servers


def live(salt: MasterlessSalt) -> tuple:
    status = call(salt, "sentry_server.status")
    assert status["up"], status
    return status["uuid"], status["serial"]


def test_a_backup_and_its_drill_pass_and_are_recorded(deployed):
    salt = deployed
    before = live(salt)
    made = call(salt, "sentry_admin.backup")
    assert made["success"] and made["error"] is None and made["write_pause_seconds"] == 0
    assert made["path"].startswith(f"{FOLDER}/backup-") and made["counts"]["files"] == WHEELS
    assert made["counts"]["users"] == len(PASSWORDS) + 1  # and root
    drilled = call(salt, "sentry_admin.verify_backup")
    assert drilled["success"] and drilled["path"] == made["path"], drilled
    assert drilled["counts"]["files"] == WHEELS and drilled["counts"]["fsck_files"] >= WHEELS
    assert set(drilled["steps"]) == {"import", "start", "check"}
    records = json.loads(salt.host.path(RECORDS).read_text())
    assert records["backup"]["last"] == records["backup"]["last_success"] == made
    assert records["drill"]["last"] == drilled
    assert call(salt, "sentry_backup.last") == records
    assert leftovers(salt) == ""
    assert live(salt) == before  # nothing was written to the live server


def damaged_copy(salt: MasterlessSalt, name: str) -> tuple[str, Path]:
    """A copy of the newest backup outside the backup folder (rotation leaves it alone)."""
    newest = call(salt, "sentry_backup.backups")[0]
    copy = f"/var/lib/sentry/{name}"
    salt.host.run(["cp", "-a", newest, copy])
    return copy, salt.host.path(copy)


def release_files(export: Path) -> list[dict]:
    data = json.loads((export / "dataindex.json").read_text())
    return [entry for entry in data["indexes"]["alice/dev"]["files"] if entry["type"] == "releasefile"]


def test_a_drill_of_a_backup_with_a_damaged_file_fails_naming_it(deployed):
    salt = deployed
    before = live(salt)
    copy, export = damaged_copy(salt, "backup-damaged-file")
    entry = release_files(export)[0]
    path = export / entry["relpath"]
    path.write_bytes(path.read_bytes()[:-20] + b"damaged on the disk!")
    said = failure(salt, "sentry_admin.verify_backup", copy)
    assert f"restore drill of {copy} failed" in said and Path(entry["relpath"]).name in said, said
    assert leftovers(salt) == ""
    last = call(salt, "sentry_backup.last")["drill"]
    assert last["last"]["success"] is False and Path(entry["relpath"]).name in last["last"]["error"]
    assert last["last_success"]["path"] != copy
    assert live(salt) == before
    salt.host.run(["rm", "-rf", copy])


def test_a_drill_of_a_backup_missing_a_user_fails_naming_the_user(deployed):
    salt = deployed
    before = live(salt)
    copy, export = damaged_copy(salt, "backup-no-carol")
    data = json.loads((export / "dataindex.json").read_text())
    del data["users"]["carol"]
    (export / "dataindex.json").write_text(json.dumps(data))
    said = failure(salt, "sentry_admin.verify_backup", copy)
    assert "user carol is missing" in said, said
    assert leftovers(salt) == ""
    assert live(salt) == before
    salt.host.run(["rm", "-rf", copy])


RESTORE_DOC = REPO / "docs" / "backups-and-monitoring.md"


def restore_commands() -> list[list[str]]:
    """The salt-call commands of the docs' restore procedure, in their order, as written (comments aside)."""
    text = RESTORE_DOC.read_text()
    section = text[text.index("### Restoring from a backup") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("\n```", start)]
    commands = [line.split("#", 1)[0].split() for line in block.splitlines()]
    assert commands and all(command[0] == "salt-call" for command in commands), commands
    return [command[1:] for command in commands]


def test_the_documented_restore_brings_the_index_back_to_a_backup(deployed):
    """docs/backups-and-monitoring.md's restore, command by command: what changed since the backup (a user
    deleted, a wheel uploaded) is undone, every file of the backup is served again, nothing is lost."""
    salt, host = deployed, deployed.host
    backup = call(salt, "sentry_backup.backups")[0]
    held = json.loads(host.path(f"{backup}/dataindex.json").read_text())
    assert "carol" in held["users"]
    call(salt, "sentry_admin.user_delete", "carol")
    late = make_wheel(Path(host.path("/tmp")), "backup-late", "9.0")
    sentry_client(host, "use", "http://127.0.0.1:3141/alice/dev")
    sentry_client(host, "login", "alice", password=PASSWORDS["alice"])
    sentry_client(host, "upload", f"/tmp/{late.name}")
    assert "carol" not in call(salt, "sentry_admin.list_users")

    said = []
    for command in restore_commands():
        done = salt.call(*[backup if word == "BACKUP" else word for word in command], check=False)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if command[0] == "state.apply":  # salt-call exits 0 on failed states: they are in its output
            applied = StateRun(done)
            assert applied.succeeded, applied.failed or applied.errors
        said.append(json.loads(done.stdout)["local"])
        if command[0] == "sentry_admin.import":  # back from the backup, not from pillar (the apply comes later)
            assert "carol" in call(salt, "sentry_admin.list_users")
    assert said[0] and said[0][0] == backup, said[0]  # the newest, as listed
    assert said[1]["success"] and said[2]["backup"].startswith("/var/lib/sentry/_data-backup-")
    assert said[3]["files"] == WHEELS, said[3]
    assert "carol" in call(salt, "sentry_admin.list_users")
    assert host.run(["curl", "-fsS", "http://127.0.0.1/alice/dev/+simple/backup-late/"], check=False).returncode != 0
    # what was there before the restore is kept aside, the late upload with it
    assert list(host.path(said[2]["backup"]).rglob(late.name))


def records_after(salt: MasterlessSalt, since: float) -> dict:
    """The records once cron made a backup and a drill that both began after ``since`` (Unix time)."""
    deadline = time.monotonic() + CRON_WAIT
    while True:
        records = call(salt, "sentry_backup.last")
        runs = [records.get(kind, {}).get("last", {}) for kind in ("backup", "drill")]
        if all(run.get("timestamp", 0) >= since for run in runs):
            return records
        if time.monotonic() > deadline:
            log = salt.host.run(["tail", "-n", "20", "/var/log/sentry/sentry-server-backup.log"], check=False)
            raise AssertionError(f"no cron run within {CRON_WAIT} s: {records}\n{log.stdout}{log.stderr}")
        time.sleep(5)


def scheduled(salt: MasterlessSalt, deb: Path) -> None:
    """Every minute: cron runs both; then a re-apply and a dry run change nothing."""
    # A backup to drill already, as on a host that ran a while: cron's first minute starts both at once.
    call(salt, "sentry_admin.backup")
    salt.set_pillar(pillar(deb, schedule="* * * * *", drill_schedule="* * * * *"))
    applied = salt.apply("sentry")
    assert applied.succeeded, applied.failed or applied.errors
    since = float(salt.host.run(["date", "+%s"]).stdout)
    records = records_after(salt, since)
    assert records["backup"]["last"]["success"], records
    assert records["drill"]["last"]["success"], records
    assert len(call(salt, "sentry_backup.backups")) <= 2  # keep: 2
    # The jobs' log turns over with logrotate (forced here; weekly on its own): the old one kept aside,
    # the next run writes a new one.
    log = "/var/log/sentry/sentry-server-backup.log"
    assert salt.host.path(log).stat().st_size > 0
    rotation = "/etc/logrotate.d/sentry-backup-sentry-server"
    salt.host.run(["logrotate", "--force", "--state", "/tmp/logrotate.state", rotation])
    assert salt.host.path(f"{log}.1").stat().st_size > 0
    assert salt.host.run(["stat", "-c", "%a %U %G", log]).stdout.split() == ["640", "root", "sentry"]
    again = salt.apply("sentry")
    assert again.succeeded and again.changed == {}, again.changed
    dry = salt.apply("sentry", "test=True")
    assert dry.would_change == set() and dry.changed == {}, dry.changed


def test_backup_switched_off_in_pillar_removes_its_schedule_and_back_on_restores_it(deployed, sentry_deb):
    """backup:enabled false after true: sentry applies sentry.backup.clean; the backups themselves stay."""
    salt = deployed
    schedule, settings = "/etc/cron.d/sentry-backup-sentry-server", "/etc/sentry/backup/sentry-server.json"
    kept = sorted(call(salt, "sentry_backup.backups"))
    assert kept and salt.host.path(schedule).exists() and salt.host.path(settings).exists()
    off = pillar(sentry_deb)
    off["sentry"]["backup"]["enabled"] = False
    salt.set_pillar(off)
    try:
        removed = salt.apply("sentry")
        assert {
            "sentry-backup-schedule-absent",
            "sentry-backup-settings-absent",
            "sentry-backup-log-rotation-absent",
        } <= set(removed.changed)
        assert not salt.host.path(schedule).exists() and not salt.host.path(settings).exists()
        assert salt.apply("sentry").changed == {}
        assert all(salt.host.path(path).exists() for path in kept), kept
    finally:
        salt.set_pillar(pillar(sentry_deb))
    restored = salt.apply("sentry")
    assert {"sentry-backup-schedule", "sentry-backup-settings"} <= set(restored.changed)
    assert salt.host.path(schedule).exists() and salt.host.path(settings).exists()


def test_cron_runs_the_backup_and_the_drill_on_a_host_with_systemd_not_running(deployed, sentry_deb):
    salt = deployed
    assert salt.host.run(["test", "-d", "/run/systemd/system"], check=False).returncode != 0
    scheduled(salt, sentry_deb)


def test_cron_runs_the_backup_and_the_drill_on_a_host_without_systemd(sentry_deb):
    with new_host("backup-nosd", kind="nosystemd") as host:
        assert host.run(["test", "-e", "/usr/bin/systemctl"], check=False).returncode != 0
        salt = MasterlessSalt(host, pillar(sentry_deb))
        deploy(salt)
        scheduled(salt, sentry_deb)
