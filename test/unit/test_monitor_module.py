"""sentry_monitor with Salt's loader mocks: thresholds from the instance's settings, exit codes, the
metrics file replaced whole, the backup record read when present.

No server: /+status is what each test says. A real master and replica are in test_monitor.py.
"""

from __future__ import annotations

import json
import os

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

levels = load("_utils/sentry_levels.py", "sentry_levels_for_module")
metrics_util = load("_utils/sentry_metrics.py", "sentry_metrics_for_module")
monitor = load("_modules/sentry_monitor.py", "sentry_monitor_module")
records = load("_utils/sentry_records.py", "sentry_records_for_module")
backups = load("_utils/sentry_backups.py", "sentry_backups_for_module")

THRESHOLDS = {
    "no_contact_warn": 60,
    "no_contact_fatal": 300,
    "behind_warn": 300,
    "behind_fatal": 3600,
    "events_warn": 3600,
    "events_fatal": 21600,
    "disk_free_warn": 0,
    "disk_free_fatal": 0,
    "backup_age_warn": 100,
    "backup_age_fatal": 200,
    "drill_age_warn": 100,
    "drill_age_fatal": 200,
    "no_record_level": "warn",
    "backups_expected": False,
}


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """A deployed instance whose server answers ``answer['status']`` (None: refused)."""
    serverdir = tmp_path / "data"
    (serverdir / "+files" / "alice" / "dev").mkdir(parents=True)
    (serverdir / "+files" / "alice" / "dev" / "pkg-1.0.whl").write_bytes(b"x" * 100)
    (serverdir / ".sqlite").write_bytes(b"y" * 50)
    settings = {
        "program": "sentry-server",
        "serverdir": str(serverdir),
        "backup_dir": str(tmp_path),
        "url": "http://127.0.0.1:3141",
        "role": "primary",
        "health": dict(THRESHOLDS),
    }
    answer = {"status": {"role": "MASTER", "serial": 4, "event-serial": 4}}

    def request(method, url, body=None, auth=None, timeout=30):
        assert (method, url) == ("GET", "http://127.0.0.1:3141/+status")
        if answer["status"] is None:
            raise CommandExecutionError("sentry at http://127.0.0.1:3141/+status does not answer: refused")
        return 200, {"result": answer["status"]}

    monkeypatch.setattr(monitor, "__salt__", {"sentry_server.settings": lambda instance=None: settings}, raising=False)
    monkeypatch.setattr(
        monitor,
        "__utils__",
        {
            "sentry_api.request": request,
            "sentry_levels.assess": levels.assess,
            "sentry_metrics.render": metrics_util.render,
            "sentry_records.read": records.read,
            "sentry_backups.incomplete": backups.incomplete,
        },
        raising=False,
    )
    monkeypatch.setattr(monitor, "__context__", {}, raising=False)
    return settings, answer


def test_health_exit_codes_follow_the_level(instance):
    settings, answer = instance
    assert monitor.health()["level"] == "ok" and monitor.__context__["retcode"] == 0
    answer["status"] = None
    report = monitor.health()
    assert (report["level"], monitor.__context__["retcode"]) == ("fatal", 2)
    assert "refused" in report["reasons"][0]["message"]
    answer["status"] = {"role": "PRIMARY", "serial": 4}
    settings["health"]["backups_expected"] = True
    assert monitor.health()["level"] == "warn" and monitor.__context__["retcode"] == 1


def test_settings_of_an_older_formula_are_refused_naming_what_to_do(instance):
    settings, _ = instance
    del settings["health"]
    with pytest.raises(CommandExecutionError, match="apply the sentry state again"):
        monitor.health()


def test_the_backup_record_is_read_beside_the_serverdir(instance, tmp_path):
    """The shape _utils/sentry_records.py writes (branch backup): the last run and the last success."""
    failed = {"timestamp": 1.0, "success": False, "error": "disk full", "seconds": 2.0}
    success = {"timestamp": 0.5, "success": True, "error": None}
    record = {"backup": {"last": failed, "last_success": success}, "other": 1}
    (tmp_path / "data.backups.json").write_text(json.dumps(record))
    assert monitor.records() == {"backup": {"at": 1.0, "ok": False, "error": "disk full"}}
    reasons = monitor.health()["reasons"]
    assert [reason["message"] for reason in reasons][:1] == ["the last backup failed: disk full"]


def test_write_metrics_replaces_the_file_whole(instance, tmp_path):
    path = tmp_path / "textfile" / "sentry.prom"
    written = monitor.write_metrics(str(path))
    assert written == {"path": str(path), "level": "ok"}
    text = path.read_text()
    assert 'sentry_release_files{instance_name="sentry-server"} 1\n' in text
    assert 'sentry_serverdir_bytes{instance_name="sentry-server"} 150\n' in text
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(path.parent) == ["sentry.prom"]  # no temporary file left
    inode = os.stat(path).st_ino
    monitor.write_metrics(str(path))
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one, not rewritten in place


@pytest.mark.parametrize("path", ["relative.prom", "/var/lib/node-exporter/sentry.txt"])
def test_write_metrics_refuses_what_the_collector_would_not_read(instance, path):
    with pytest.raises(CommandExecutionError, match=r"ending in \.prom"):
        monitor.write_metrics(path)
