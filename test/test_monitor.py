"""Health, metrics and Salt events of a real master and replica, deployed by a real salt-master.

Two test hosts with salt-minions (support/cluster.py) get ``sentry`` and
``sentry.monitor`` from the built deb, with the contact thresholds made short
by pillar (45 s warn, 90 s fatal: an idle replica hears from its master at
least every 30 s, devpi's long poll). Then the route from the replica to its
master is cut (the salt-master stays reachable, so events can travel):
``sentry_admin.health`` goes warn then fatal naming the lost contact, the
beacon's ``sentry/health/warn`` and ``sentry/health/fatal`` events reach the
salt-master, cron's metrics file says so and passes ``promtool check
metrics``; with the route back, health and the event say ok again.
About 5 minutes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from support.cluster import SaltCluster, changed, failed
from support.hosts import TestHost

pytestmark = pytest.mark.slow

MASTER, REPLICA = "mon-master", "mon-replica"
PROGRAM = "sentry-server"
ROOT_PASSWORD = "Monitor-Root-pw-41"
SECRET = "monitor-test-secret-0123456789abcdef"
METRICS = "/var/lib/prometheus/node-exporter/sentry.prom"
HEALTH = {
    "no_contact_warn": 45,
    "no_contact_fatal": 90,
    # The hosts' disks are tmpfs layers of this machine: not what the test is about.
    "disk_free_warn": 1,
    "disk_free_fatal": 0.5,
    # The master backs up on demand only (no schedule): no backup yet is no reason here.
    "no_record_level": "ok",
}
BEACON_INTERVAL = 5
EVENT_PREFIX = f"salt/beacon/{REPLICA}/sentry_health_{PROGRAM}/sentry/health"
PROMTOOL = shutil.which("promtool")
RULES_DIR = "/etc/prometheus/rules"  # where sentry.monitor writes the alert rules (monitor:rules_dir)


def pillars(sentry_deb, master_address: str, replica_address: str) -> dict[str, dict]:
    package = {"source": "deb", "deb": str(sentry_deb)}
    monitor = {"enabled": True, "health": HEALTH, "beacon_interval": BEACON_INTERVAL, "rules_dir": RULES_DIR}
    return {
        MASTER: {
            "sentry": {
                "package": package,
                "server": {"root_password": ROOT_PASSWORD, "role": "primary", "secret": SECRET, "no_root_pypi": True},
                "nginx": {"replica_addresses": [replica_address]},
                "monitor": monitor,
                "backup": {"enabled": True, "schedule": "", "drill_schedule": ""},
            }
        },
        REPLICA: {
            "sentry": {
                "package": package,
                "server": {"master_url": f"http://{master_address}", "secret": SECRET},
                "monitor": monitor,
            }
        },
    }


class Deployed:
    def __init__(self, cluster: SaltCluster, hosts: dict[str, TestHost], first: dict) -> None:
        self.cluster, self.hosts, self.first = cluster, hosts, first

    def health(self, minion_id: str) -> dict:
        asked = self.cluster.salt(minion_id, "sentry_admin.health", timeout=60)
        assert isinstance(asked.data, dict) and isinstance(asked.data.get(minion_id), dict), asked.stdout
        return asked.data[minion_id]

    def wait_for_level(self, minion_id: str, level: str, timeout: float, heard: bool = False) -> dict:
        """Until health says ``level`` (and, with ``heard``, the replica has heard from its master)."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.health(minion_id)
            done = report["level"] == level and (not heard or report.get("heard_seconds") is not None)
            if done or time.monotonic() > deadline:
                assert done, report
                return report
            time.sleep(3)

    def metrics(self, minion_id: str) -> dict[str, float]:
        text = self.hosts[minion_id].path(METRICS).read_text()
        return {
            match.group(1): float(match.group(2))
            for match in re.finditer(r'^(\w+)\{instance_name="sentry-server"\} (\S+)$', text, re.MULTILINE)
        }

    def cron_run(self, minion_id: str) -> str:
        """What the cron job says when run by hand now (for a failure's message)."""
        host = self.hosts[minion_id]
        line = next(
            line
            for line in host.path(f"/etc/cron.d/sentry-monitor-{PROGRAM}").read_text().splitlines()
            if "root" in line
        )
        command = line.split(" root ", 1)[1].replace(">/dev/null", "")
        ran = host.sh(f"time ({command})", check=False, timeout=300)
        return f"{command}\nexit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"

    def wait_for_metric(self, minion_id: str, name: str, value: float, timeout: float = 240) -> dict[str, float]:
        """Until cron has written ``name`` = ``value`` (it runs once a minute)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.metrics(minion_id) if self.hosts[minion_id].path(METRICS).exists() else {}
            if found.get(name) == value or time.monotonic() > deadline:
                assert found.get(name) == value, (found, self.cron_run(minion_id))
                return found
            time.sleep(2)


@pytest.fixture(scope="module")
def deployed(salt_factories, sentry_deb, tmp_path_factory):
    state_top = {MASTER: ["sentry"], REPLICA: ["sentry"]}  # monitor:enabled makes sentry.monitor part of it
    with SaltCluster(
        salt_factories, tmp_path_factory.mktemp("monitor"), master_id="sentry-monitor", state_top=state_top
    ) as cluster:
        hosts = cluster.add_minions({MASTER: {}, REPLICA: {}})
        for minion_id, pillar in pillars(sentry_deb, hosts[MASTER].address, hosts[REPLICA].address).items():
            cluster.set_pillar(minion_id, pillar)
        first = cluster.apply(MASTER)
        first.update(cluster.apply(REPLICA))
        # The beacon's configuration is read when salt-minion starts (docs/backups-and-monitoring.md: restart it once).
        cluster.restart_minion(REPLICA)
        yield Deployed(cluster, hosts, first)


def test_first_apply_succeeds_and_both_are_ok(deployed):
    for minion_id, states in deployed.first.items():
        assert not failed(states), (minion_id, failed(states))
        assert {"sentry-monitor-cron-job", "sentry-monitor-beacon-config", "sentry-monitor-alert-rules"} <= set(
            changed(states)
        ), minion_id
        # the alert rules, with this pillar's thresholds, as promtool reads them (test/unit/test_alert_rules.py
        # runs them on series)
        rules = deployed.hosts[minion_id].path(f"{RULES_DIR}/sentry-{PROGRAM}.rules.yml")
        checked = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        contact = f'sentry_replica_contact_age_seconds{{instance_name="{PROGRAM}"}} > {HEALTH["no_contact_fatal"]}'
        assert contact in rules.read_text()
    assert deployed.wait_for_level(MASTER, "ok", timeout=60)["role"] == "master"
    replica = deployed.wait_for_level(REPLICA, "ok", timeout=120, heard=True)
    assert (replica["role"], replica["lag_serials"]) == ("replica", 0), replica
    assert replica["heard_seconds"] < HEALTH["no_contact_warn"], replica


def test_reapply_and_dry_run_change_nothing(deployed):
    for args in ((), ("test=True",)):
        again = deployed.cluster.apply("*", *args)
        assert {minion: failed(states) for minion, states in again.items() if failed(states)} == {}, args
        assert {minion: changed(states) for minion, states in again.items() if changed(states)} == {}, args
        # a dry run plans nothing either: no state with result None
        assert not [key for states in again.values() for key, result in states.items() if result["result"] is None]


def test_cron_writes_metrics_that_promtool_accepts(deployed):
    for minion_id in (MASTER, REPLICA):
        found = deployed.wait_for_metric(minion_id, "sentry_up", 1)
        assert found["sentry_health_level"] == 0, found
        assert found["sentry_serverdir_bytes"] > 0, found
    # A minute's run may come before the replica's first contact: lag is known from the next one on.
    deployed.wait_for_metric(REPLICA, "sentry_replica_lag_serials", 0)
    assert "sentry_replica_lag_serials" not in deployed.metrics(MASTER)
    assert PROMTOOL, "promtool is missing: script/bootstrap test installs Debian's prometheus package"
    for minion_id in (MASTER, REPLICA):
        checked = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=deployed.hosts[minion_id].path(METRICS).read_text(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_cut_replica_goes_warn_then_fatal_and_the_master_hears_of_it(deployed, event_listener):
    replica, master_address = deployed.hosts[REPLICA], deployed.hosts[MASTER].address
    master_id = deployed.cluster.master.id
    cut_at = time.time()
    replica.run(["ip", "route", "add", "blackhole", f"{master_address}/32"])
    try:
        warned = event_listener.wait_for_events([(master_id, f"{EVENT_PREFIX}/warn")], timeout=120, after_time=cut_at)
        assert warned.found_all_events, f"no warn event\n{deployed.cluster.minion_log(REPLICA)}"
        (event,) = list(warned)
        assert event.data["level"] == "warn" and event.data["previous"] == "ok", event.data
        assert [reason["check"] for reason in event.data["reasons"]] == ["contact"], event.data

        fatal = event_listener.wait_for_events([(master_id, f"{EVENT_PREFIX}/fatal")], timeout=120, after_time=cut_at)
        assert fatal.found_all_events, "no fatal event"
        report = deployed.health(REPLICA)
        assert report["level"] == "fatal", report
        assert report["heard_seconds"] > HEALTH["no_contact_fatal"], report
        assert "no answer from the primary" in report["reasons"][0]["message"], report
        found = deployed.wait_for_metric(REPLICA, "sentry_health_level", 2)
        assert found["sentry_replica_contact_age_seconds"] > HEALTH["no_contact_fatal"], found
        assert deployed.health(MASTER)["level"] == "ok"  # the master itself is fine
    finally:
        replica.run(["ip", "route", "del", "blackhole", f"{master_address}/32"])
    back_at = time.time()
    ok = event_listener.wait_for_events([(master_id, f"{EVENT_PREFIX}/ok")], timeout=150, after_time=back_at)
    assert ok.found_all_events, "no ok event after the route came back"
    assert deployed.health(REPLICA)["level"] == "ok"
    deployed.wait_for_metric(REPLICA, "sentry_health_level", 0)


def test_a_failed_drill_reaches_the_master_the_health_and_the_metrics(deployed, event_listener):
    cluster, master = deployed.cluster, deployed.hosts[MASTER]
    cluster.restart_minion(MASTER)  # its beacon's configuration is read at start, see docs/backups-and-monitoring.md
    made = cluster.salt(MASTER, "sentry_admin.backup", timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    newest = cluster.salt(MASTER, "sentry_backup.backups").data[MASTER][0]
    damaged = "/var/lib/sentry/backup-damaged"
    master.run(["cp", "-a", newest, damaged])
    dataindex = master.path(damaged) / "dataindex.json"
    dataindex.write_text(dataindex.read_text()[: len(dataindex.read_text()) // 2])  # cut short, as a full disk would
    started = time.time()
    drilled = cluster.salt(MASTER, "sentry_admin.verify_backup", damaged, timeout=300)
    assert "restore drill of /var/lib/sentry/backup-damaged failed" in drilled.stdout, drilled.stdout

    tag = f"salt/beacon/{MASTER}/sentry_health_{PROGRAM}/sentry/drill/failed"
    heard = event_listener.wait_for_events([(cluster.master.id, tag)], timeout=90, after_time=started)
    assert heard.found_all_events, f"no drill/failed event\n{cluster.minion_log(MASTER)}"
    (event,) = list(heard)
    assert event.data["ok"] is False and event.data["error"], event.data
    report = deployed.health(MASTER)
    assert report["level"] == "warn" and [reason["check"] for reason in report["reasons"]] == ["drill"], report
    found = deployed.wait_for_metric(MASTER, "sentry_last_drill_success", 0)
    assert found["sentry_last_backup_success"] == 1, found


def test_monitor_switched_off_in_pillar_removes_what_it_set_up_and_back_on_restores_it(deployed):
    """monitor:enabled false after true: sentry applies sentry.monitor.clean (cron job, metrics file, beacon,
    alert rules)."""
    cluster, host = deployed.cluster, deployed.hosts[MASTER]
    watched = [f"/etc/cron.d/sentry-monitor-{PROGRAM}", METRICS, f"{RULES_DIR}/sentry-{PROGRAM}.rules.yml"]
    deployed.wait_for_metric(MASTER, "sentry_up", 1)  # cron's first minute has written the file
    assert all(host.path(path).exists() for path in watched)
    on = cluster.pillars[MASTER]
    off = {"sentry": {**on["sentry"], "monitor": {**on["sentry"]["monitor"], "enabled": False}}}
    cluster.set_pillar(MASTER, off)
    try:
        removed = cluster.apply(MASTER)[MASTER]
        assert {
            "sentry-monitor-cron-job-absent",
            "sentry-monitor-metrics-file-absent",
            "sentry-monitor-alert-rules-absent",
        } <= set(changed(removed))
        assert not [path for path in watched if host.path(path).exists()]
        assert changed(cluster.apply(MASTER)[MASTER]) == {}
    finally:
        cluster.set_pillar(MASTER, on)
    restored = cluster.apply(MASTER)[MASTER]
    assert "sentry-monitor-cron-job" in changed(restored)
    assert host.path(watched[0]).exists()
    deployed.wait_for_metric(MASTER, "sentry_up", 1)
