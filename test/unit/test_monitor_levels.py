"""The health level (_utils/sentry_levels.py) and the metrics text (_utils/sentry_metrics.py), no host.

Every threshold is checked on both sides of its edge, both spellings of a
master's role, a replica's fields as 6.20 reports them and as older servers
did (master-* only, no event serial), and what a missing record means.
The real replica that goes warn then fatal when its link is cut is in
test_monitor.py.
"""

from __future__ import annotations

import pytest
import yaml
from support.loading import REPO, load

levels = load("_utils/sentry_levels.py", "sentry_levels_util")
metrics = load("_utils/sentry_metrics.py", "sentry_metrics_util")

NOW = 1_800_000_000.0
THRESHOLDS = {
    **yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]["monitor"]["health"],
    "backups_expected": False,
}


def master(**fields) -> dict:
    """/+status of a master in sync with its event processing, as 6.20 answers."""
    return {
        "role": "MASTER",
        "serial": 10,
        "event-serial": 10,
        "last-commit-timestamp": NOW - 5,
        "event-serial-in-sync-at": NOW - 1,
        **fields,
    }


def replica(**fields) -> dict:
    """/+status of a replica in sync that heard from its master a second ago."""
    return {
        "role": "REPLICA",
        "serial": 10,
        "event-serial": 10,
        "last-commit-timestamp": NOW - 5,
        "event-serial-in-sync-at": NOW - 1,
        "primary-serial": 10,
        "master-serial": 10,
        "update-from-primary-at": NOW - 1,
        "update-from-master-at": NOW - 1,
        "replica-started-at": NOW - 1000,
        "replica-in-sync-at": NOW - 1,
        "replication-errors": {},
        **fields,
    }


def assess(status, **kwargs):
    thresholds = {**THRESHOLDS, **kwargs.pop("thresholds", {})}
    return levels.assess(status, NOW, thresholds, **kwargs)


def checks(report) -> dict[str, str]:
    return {reason["check"]: reason["level"] for reason in report["reasons"]}


def test_defaults_are_devpi_webs_thresholds():
    assert (THRESHOLDS["no_contact_warn"], THRESHOLDS["no_contact_fatal"]) == (60, 300)
    assert (THRESHOLDS["behind_warn"], THRESHOLDS["behind_fatal"]) == (300, 3600)
    assert (THRESHOLDS["events_warn"], THRESHOLDS["events_fatal"]) == (3600, 21600)


@pytest.mark.parametrize("role", ["MASTER", "PRIMARY", "master", "primary"])
def test_both_spellings_of_a_master_are_a_healthy_master(role):
    report = assess(master(role=role), expected_role="master")
    assert (report["level"], report["role"], report["reasons"]) == ("ok", "master", [])


def test_a_healthy_replica_is_ok_with_its_facts():
    report = assess(replica(), expected_role="replica")
    assert report["level"] == "ok", report["reasons"]
    assert (report["role"], report["lag_serials"], report["lag_seconds"], report["heard_seconds"]) == (
        "replica",
        0,
        0.0,
        1.0,
    )


def test_an_unknown_role_warns_and_a_wrong_one_is_fatal():
    assert checks(assess(master(role="SECONDARY"))) == {"role": "warn"}
    assert checks(assess(master(), expected_role="replica")) == {"role": "fatal"}
    assert checks(assess(replica(), expected_role="master")) == {"role": "fatal"}


def test_a_server_that_does_not_answer_is_fatal_naming_why():
    report = assess(None, error="sentry at http://127.0.0.1:3141/+status does not answer: refused")
    assert report["level"] == "fatal" and report["up"] is False
    assert "refused" in report["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("silent", "level"),
    [(60, "ok"), (60.5, "warn"), (300, "warn"), (300.5, "fatal")],
)
def test_contact_with_the_master_at_each_edge(silent, level):
    report = assess(replica(**{"update-from-primary-at": NOW - silent, "update-from-master-at": NOW - silent}))
    assert checks(report).get("contact", "ok") == level
    assert report["level"] == level
    assert report["heard_seconds"] == silent


@pytest.mark.parametrize(("started", "level"), [(60, "ok"), (61, "warn"), (301, "fatal")])
def test_a_replica_that_never_heard_from_its_master_counts_from_its_start(started, level):
    status = replica(
        **{"update-from-primary-at": None, "update-from-master-at": None, "replica-started-at": NOW - started}
    )
    report = assess(status)
    assert checks(report).get("contact", "ok") == level
    if level != "ok":
        assert "since it started" in report["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("behind", "level"),
    [(300, "ok"), (301, "warn"), (3600, "warn"), (3601, "fatal")],
)
def test_a_replica_behind_its_master_at_each_edge(behind, level):
    report = assess(replica(**{"primary-serial": 13, "master-serial": 13, "replica-in-sync-at": NOW - behind}))
    assert (report["lag_serials"], report["lag_seconds"]) == (3, behind)
    assert checks(report).get("lag", "ok") == level
    if level != "ok":
        assert "3 serials behind" in report["reasons"][0]["message"]


def test_behind_and_never_in_sync_counts_from_the_start():
    status = replica(**{"primary-serial": 13, "replica-in-sync-at": None, "replica-started-at": NOW - 4000})
    report = assess(status)
    assert (report["lag_seconds"], checks(report)) == (4000, {"lag": "fatal"})


def test_behind_for_an_unknown_time_warns():
    status = replica(**{"primary-serial": 13, "replica-in-sync-at": None, "replica-started-at": None})
    assert checks(assess(status)) == {"lag": "warn"}


def test_replication_errors_are_fatal_and_named():
    errors = {"alice/dev/+f/a/b/pkg-1.0.whl": "checksum mismatch"}
    report = assess(replica(**{"replication-errors": errors}))
    assert checks(report) == {"replication": "fatal"}
    assert "checksum mismatch" in report["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("out_of_sync", "level"),
    [(3600, "ok"), (3601, "warn"), (21600, "warn"), (21601, "fatal")],
)
def test_event_processing_out_of_sync_at_each_edge(out_of_sync, level):
    status = master(**{"serial": 12, "event-serial": 10, "event-serial-in-sync-at": NOW - out_of_sync})
    report = assess(status)
    assert checks(report).get("events", "ok") == level


def test_event_processing_never_in_sync_counts_from_the_last_commit():
    status = master(
        **{"serial": 12, "event-serial": 10, "event-serial-in-sync-at": None, "last-commit-timestamp": NOW - 7200}
    )
    assert checks(assess(status)) == {"events": "warn"}


def test_events_in_sync_are_fine_however_old_the_sync():
    assert assess(master(**{"event-serial-in-sync-at": NOW - 10**6}))["level"] == "ok"


def test_an_older_server_without_primary_or_event_fields_is_judged_on_what_it_says():
    """Before 6.13 a replica said master-*; before devpi-web there was no event serial."""
    old = {
        "role": "REPLICA",
        "serial": 7,
        "master-serial": 9,
        "update-from-master-at": NOW - 120,
        "replica-in-sync-at": NOW - 30,
    }
    report = assess(old, expected_role="replica")
    assert (report["lag_serials"], report["heard_seconds"]) == (2, 120)
    assert checks(report) == {"contact": "warn"}  # behind for 30 s only; no event check without the fields


def test_a_bare_status_of_an_old_master_is_ok():
    assert assess({"role": "MASTER", "serial": 3}, expected_role="master")["level"] == "ok"


@pytest.mark.parametrize(("free", "level"), [(10, "ok"), (9.9, "warn"), (5, "warn"), (4.9, "fatal")])
def test_free_disk_at_each_edge(free, level):
    disk = {"path": "/var/lib/sentry/data", "free_bytes": 123, "free_percent": free}
    report = assess(master(), disk=disk)
    assert checks(report).get("disk", "ok") == level
    assert report["disk_free_percent"] == free


def test_no_backup_recorded_is_nothing_without_backups_and_the_pillars_level_with_them():
    assert assess(master())["level"] == "ok"
    expected = assess(master(), thresholds={"backups_expected": True})
    assert checks(expected) == {"backup": "warn", "drill": "warn"}
    assert [reason["message"] for reason in expected["reasons"]] == ["no backup recorded", "no drill recorded"]
    assert checks(assess(master(), thresholds={"backups_expected": True, "no_record_level": "fatal"})) == {
        "backup": "fatal",
        "drill": "fatal",
    }
    assert assess(master(), thresholds={"backups_expected": True, "no_record_level": "ok"})["level"] == "ok"


@pytest.mark.parametrize(("age", "level"), [(93600, "ok"), (93601, "warn"), (180001, "fatal")])
def test_backup_age_at_each_edge(age, level):
    records = {"backup": {"at": NOW - age, "ok": True}, "drill": {"at": NOW, "ok": True}}
    assert checks(assess(master(), records=records)).get("backup", "ok") == level


@pytest.mark.parametrize(("age", "level"), [(691200, "ok"), (691201, "warn"), (1296001, "fatal")])
def test_drill_age_at_each_edge(age, level):
    records = {"backup": {"at": NOW, "ok": True}, "drill": {"at": NOW - age, "ok": True}}
    assert checks(assess(master(), records=records)).get("drill", "ok") == level


def test_a_failed_drill_warns_naming_its_error():
    records = {"backup": {"at": NOW, "ok": True}, "drill": {"at": NOW, "ok": False, "error": "pkg-1.0.whl: sha256"}}
    report = assess(master(), records=records)
    assert checks(report) == {"drill": "warn"}
    assert "pkg-1.0.whl" in report["reasons"][0]["message"]


def test_the_worst_reason_is_the_level():
    status = replica(**{"update-from-primary-at": NOW - 100, "primary-serial": 20, "replica-in-sync-at": NOW - 4000})
    report = assess(status)
    assert checks(report) == {"contact": "warn", "lag": "fatal"}
    assert report["level"] == "fatal"


# --- the metrics text --------------------------------------------------------------------


def rendered(report, records=None) -> dict[str, str]:
    text = metrics.render('sentry-"a"', report, records or {}, 4, 1234)
    assert text.endswith("\n")
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            name, labels = name_labels.split("{", 1)
            assert labels == 'instance_name="sentry-\\"a\\""}', line
            samples[name] = value
    return samples


def test_a_replicas_metrics():
    report = assess(replica(**{"primary-serial": 13, "replica-in-sync-at": NOW - 400}))
    samples = rendered(report, {"backup": {"at": NOW, "ok": True}, "drill": {"at": NOW - 9, "ok": False}})
    assert samples == {
        "sentry_up": "1",
        "sentry_health_level": "1",
        "sentry_serial": "10",
        "sentry_event_serial": "10",
        "sentry_replica_lag_serials": "3",
        "sentry_replica_lag_seconds": "400.0",
        "sentry_replica_contact_age_seconds": "1.0",
        "sentry_replication_errors": "0",
        "sentry_last_backup_timestamp_seconds": repr(NOW),
        "sentry_last_backup_success": "1",
        "sentry_last_drill_timestamp_seconds": repr(NOW - 9),
        "sentry_last_drill_success": "0",
        "sentry_release_files": "4",
        "sentry_serverdir_bytes": "1234",
    }


def test_a_server_down_has_up_0_and_level_2_and_no_made_up_serial():
    samples = rendered(assess(None, error="refused"))
    assert samples == {
        "sentry_up": "0",
        "sentry_health_level": "2",
        "sentry_release_files": "4",
        "sentry_serverdir_bytes": "1234",
    }


def test_a_master_has_no_replica_metrics():
    assert not [name for name in rendered(assess(master())) if "replica" in name]


def test_unfinished_snapshots_warn_and_say_what_removes_them():
    assert "snapshots" not in checks(assess(master(), unfinished=[]))
    left = ["/var/lib/sentry/._data-backup-20260101-120000.incomplete"]
    report = assess(master(), unfinished=left)
    assert checks(report) == {"snapshots": "warn"} and report["unfinished_snapshots"] == 1
    assert report["reasons"][0]["message"] == (
        f"1 unfinished snapshot(s) hold disk space: {left[0]}; sentry_data.recover removes them"
    )
