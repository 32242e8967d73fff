"""Beacon: an event when a sentry instance's health changes level, and when a backup or drill fails.

Each run asks ``sentry_monitor.health`` (the same check as
``sentry_admin.health``) and returns an event only on a change:

- ``sentry/health/ok``, ``sentry/health/warn``, ``sentry/health/fatal`` when
  the level differs from the last one seen (and at the first run, unless ok),
  with the level before, the reasons and the facts;
- ``sentry/backup/failed`` and ``sentry/drill/failed`` once per failed run
  recorded (a record's ``at`` not seen before, with ``ok`` false).

Salt puts them under the beacon's prefix: on the master the tag is
``salt/beacon/<minion id>/<beacon name>/sentry/health/warn``, which a reactor
matches with ``salt/beacon/*/sentry_health*/sentry/health/*``. What was seen
last is kept in the minion's cachedir, so a restarted minion does not
announce an unchanged level again.

Configuration (state ``sentry.monitor`` writes it to ``minion.d``):

.. code-block:: yaml

    beacons:
      sentry_health_sentry-server:
        - beacon_module: sentry_health
        - instance: sentry-server
        - interval: 60
"""

from __future__ import annotations

import json
import logging
import os

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "sentry_health"
KNOWN = ("instance", "interval", "beacon_module", "disable_during_state_run")


def __virtual__():
    return __virtualname__


def _config(config: list) -> dict:
    merged = {}
    for item in config:
        merged.update(item)
    return merged


def validate(config) -> tuple[bool, str]:
    """A list of one-key mappings: ``instance`` (a program name) and Salt's own ``interval``."""
    if not isinstance(config, list) or not all(isinstance(item, dict) for item in config):
        return False, "sentry_health: the configuration is a list of mappings, e.g. [{instance: sentry-server}]"
    unknown = sorted(set(_config(config)) - set(KNOWN))
    if unknown:
        return False, f"sentry_health: unknown settings {', '.join(unknown)} (known: {', '.join(KNOWN)})"
    return True, "valid beacon configuration"


def _memory_path(instance: str | None) -> str:
    return os.path.join(__opts__["cachedir"], f"sentry_health_beacon-{instance or 'default'}.json")


def _remembered(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _remember(path: str, seen: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(seen, handle)
    os.replace(temporary, path)


def _failures(records: dict, seen: dict) -> list[dict]:
    """An event for each recorded backup or drill that failed and was not announced yet."""
    events = []
    for kind in ("backup", "drill"):
        record = records.get(kind) or {}
        if record.get("at") is None or record.get("at") == seen.get(kind):
            continue
        seen[kind] = record["at"]
        if record.get("ok") is False:
            events.append({"tag": f"sentry/{kind}/failed", **record})
    return events


def beacon(config) -> list[dict]:
    """The events of this run (see the module's description)."""
    instance = _config(config).get("instance")
    try:
        report = __salt__["sentry_monitor.health"](instance=instance)
        records = __salt__["sentry_monitor.records"](instance=instance)
    except CommandExecutionError as exc:
        log.warning("sentry_health beacon: no health of %s: %s", instance or "the instance", exc)
        return []
    path = _memory_path(instance)
    seen = _remembered(path)
    events = _failures(records, seen)
    before = seen.get("level")
    if report["level"] != before and (before is not None or report["level"] != "ok"):
        events.append({"tag": f"sentry/health/{report['level']}", "previous": before, **report})
    if events or before != report["level"]:
        seen["level"] = report["level"]
        _remember(path, seen)
    return events
