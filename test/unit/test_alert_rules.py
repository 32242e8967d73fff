"""The alert rules sentry.monitor writes (sentry/files/default/prometheus-rules.yml.jinja), run by promtool.

The template is rendered as the formula renders it, from the settings of a pillar
(``_utils/sentry_pillar.py``, ``_utils/sentry_derived.py``): its thresholds are
monitor:health's. ``promtool check rules`` accepts the file; ``promtool test rules``
feeds each alert a series just past its threshold, where it must fire with its
labels, and one at the threshold, where it must not. No host, no server: promtool
comes from Debian's prometheus package (script/bootstrap test).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import jinja2
import pytest
import yaml
from support.loading import REPO, load

rules = load("_utils/sentry_pillar.py", "sentry_pillar_alerts_unit")
derived = load("_utils/sentry_derived.py", "sentry_derived_alerts_unit")
DEFAULTS = yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]
TEMPLATE = REPO / "sentry" / "files" / "default" / "prometheus-rules.yml.jinja"
PROGRAM = "sentry-b"
PILLAR = {
    "server": {"program": PROGRAM},
    "monitor": {"rules_dir": "/etc/prometheus/rules", "health": {"behind_warn": 120}},
}
EVAL_MINUTES = 15  # past every rule's 'for'

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is missing")


def rendered(pillar: dict) -> str:
    sentry = rules.checked(copy.deepcopy(DEFAULTS), pillar, file_exists=lambda path: False)
    sentry["derived"] = derived.derive(
        sentry, tplroot="sentry", python_executable="/usr/bin/python3", conf_file="/etc/salt/minion",
        file_exists=lambda path: False,
    )  # fmt: skip
    # YAML, not HTML: nothing to escape (autoescape off, as Salt renders it)
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(  # noqa: S701
        TEMPLATE.read_text()
    )
    return template.render(sentry=derived.without_secrets(sentry))


def promtool(folder, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=folder, capture_output=True, text=True, check=False)


def series_for(expr: str, crossing: bool) -> tuple[str, float]:
    """The series an alert's expression reads, and a value past its threshold (``crossing``) or at it."""
    now = EVAL_MINUTES * 60
    aged = re.fullmatch(r"time\(\) - (\S+) > (\d+)", expr)
    if aged:  # a timestamp older than the threshold at the evaluation, or exactly that old
        return aged.group(1), now - int(aged.group(2)) - (1 if crossing else 0)
    metric, operator, threshold = re.fullmatch(r"(\S+) (==|>|<) (\d+(?:\.\d+)?)", expr).groups()
    threshold = float(threshold)
    if operator == "==":  # states, not thresholds: what each means is fixed here, not read from the rule
        name = metric.split("{")[0]
        bad, good = {"sentry_up": (0, 1), "sentry_health_level": (2, 1)}.get(name, (0, 1))  # *_success: 0 failed
        return metric, bad if crossing else good
    step = 1 if operator == ">" else -1
    return metric, threshold + step if crossing else threshold


def test_the_rules_are_valid_and_each_alert_fires_past_its_threshold_and_not_at_it(tmp_path):
    text = rendered(PILLAR)
    (tmp_path / "rules.yml").write_text(text)
    checked = promtool(tmp_path, "check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = yaml.safe_load(text)["groups"][0]["rules"]
    assert {alert["alert"] for alert in alerts} >= {
        "SentryDown", "SentryReplicaBehind", "SentryReplicaOutOfContact", "SentryReplicationErrors",
        "SentryBackupFailed", "SentryBackupTooOld", "SentryDrillFailed", "SentryDrillTooOld", "SentryDiskNearlyFull",
    }  # fmt: skip
    tests = []
    for alert in alerts:
        for crossing in (True, False):
            metric, value = series_for(alert["expr"], crossing)
            fired = [
                {"exp_labels": {**alert["labels"], "instance_name": PROGRAM}, "exp_annotations": alert["annotations"]}
            ]
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [{"series": metric, "values": f"{value}x{EVAL_MINUTES + 1}"}],
                    "alert_rule_test": [
                        {
                            "eval_time": f"{EVAL_MINUTES}m",
                            "alertname": alert["alert"],
                            "exp_alerts": fired if crossing else [],
                        }
                    ],
                }
            )
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "tests": tests}))
    tested = promtool(tmp_path, "test", "rules", "tests.yml")
    assert tested.returncode == 0, tested.stdout[-5000:] + tested.stderr[-5000:]


THRESHOLDS = {  # alert -> the monitor:health key of its threshold ("Warning" alerts: the _warn one)
    "SentryReplicaBehind": "behind",
    "SentryReplicaOutOfContact": "no_contact",
    "SentryBackupTooOld": "backup_age",
    "SentryDrillTooOld": "drill_age",
    "SentryDiskNearlyFull": "disk_free",
}


def test_the_thresholds_are_the_health_checks():
    """Each threshold is monitor:health's, the pillar's where it sets one (behind_warn here), its default else."""
    alerts = {alert["alert"]: alert["expr"] for alert in yaml.safe_load(rendered(PILLAR))["groups"][0]["rules"]}
    health = {**DEFAULTS["monitor"]["health"], **PILLAR["monitor"]["health"]}
    for name, key in THRESHOLDS.items():
        for suffix, level in (("", "fatal"), ("Warning", "warn")):
            threshold = re.search(r" [<>] (\d+)$", alerts[name + suffix]).group(1)
            assert int(threshold) == health[f"{key}_{level}"], (name + suffix, alerts[name + suffix])
    assert alerts["SentryReplicaBehindWarning"] == f'sentry_replica_lag_seconds{{instance_name="{PROGRAM}"}} > 120'
