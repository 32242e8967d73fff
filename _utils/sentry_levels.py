"""The health level of a sentry server: ok, warn or fatal, with a reason for each check that is not ok.

Pure logic, no I/O: ``assess`` takes what the server's ``/+status`` said (or
why it did not answer), the free disk under its serverdir, the last backup
and drill as recorded, the thresholds (pillar ``sentry:monitor:health``, as
the formula rendered them) and the time now. The checks and their default
thresholds are devpi-web's own (no contact with the master 1 min warn /
5 min fatal, replica behind 5 min warn / 60 min fatal, event processing out
of sync 1 h warn / 6 h fatal); both role spellings (MASTER, PRIMARY) count as
a master, and fields an older server does not report are skipped, not guessed.
Reached as ``__utils__["sentry_levels.assess"]``.
"""

from __future__ import annotations

LEVELS = ("ok", "warn", "fatal")
MASTER_ROLES = ("MASTER", "PRIMARY")
REPLICA_ROLES = ("REPLICA",)


def worst(levels) -> str:
    """The worst of ``levels`` (ok when there are none)."""
    return max(levels, key=LEVELS.index, default="ok")


def by_age(seconds: float | None, warn: float, fatal: float) -> str:
    """ok, warn (more than ``warn`` seconds) or fatal (more than ``fatal``); ok when unknown."""
    if seconds is None:
        return "ok"
    if seconds > fatal:
        return "fatal"
    if seconds > warn:
        return "warn"
    return "ok"


def _first(status: dict, *keys: str):
    """The value of the first of ``keys`` that ``status`` has and is not None (primary-* before master-*)."""
    return next((status[key] for key in keys if status.get(key) is not None), None)


def _since(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(now - then, 0.0), 1)


def _reason(level: str, check: str, message: str) -> dict:
    return {"level": level, "check": check, "message": message}


def role_of(status: dict) -> str | None:
    """master, replica, or None for a role this formula does not know."""
    role = str(status.get("role", "")).upper()
    if role in MASTER_ROLES:
        return "master"
    if role in REPLICA_ROLES:
        return "replica"
    return None


def replica_facts(status: dict, now: float) -> dict:
    """A replica's lag (serials, seconds), seconds since it heard from its master, and its replication errors."""
    serial, primary_serial = status.get("serial"), _first(status, "primary-serial", "master-serial")
    lag = None if serial is None or primary_serial is None else max(primary_serial - serial, 0)
    heard_at = _first(status, "update-from-primary-at", "update-from-master-at")
    started_at = status.get("replica-started-at")
    in_sync_at = status.get("replica-in-sync-at")
    if lag:
        # Behind since it was last in sync, or since it started when it never was.
        lag_seconds = _since(now, in_sync_at if in_sync_at is not None else started_at)
    else:
        lag_seconds = 0.0 if lag == 0 else None
    return {
        "master_serial": primary_serial,
        "lag_serials": lag,
        "lag_seconds": lag_seconds,
        "heard_seconds": _since(now, heard_at),
        "never_heard_seconds": _since(now, started_at) if heard_at is None else None,
        "replication_errors": status.get("replication-errors") or {},
    }


def replica_reasons(facts: dict, thresholds: dict) -> list[dict]:
    """The reasons a replica is not ok: no contact with its master, behind it, replication errors."""
    reasons = []
    if facts["heard_seconds"] is not None:
        level = by_age(facts["heard_seconds"], thresholds["no_contact_warn"], thresholds["no_contact_fatal"])
        if level != "ok":
            reasons.append(_reason(level, "contact", f"no answer from the primary for {facts['heard_seconds']:.0f} s"))
    elif facts["never_heard_seconds"] is not None:
        level = by_age(facts["never_heard_seconds"], thresholds["no_contact_warn"], thresholds["no_contact_fatal"])
        if level != "ok":
            reasons.append(
                _reason(
                    level,
                    "contact",
                    f"no answer from the primary since it started {facts['never_heard_seconds']:.0f} s ago",
                )
            )
    if facts["lag_serials"]:
        if facts["lag_seconds"] is None:
            level, since = "warn", "for an unknown time"
        else:
            level = by_age(facts["lag_seconds"], thresholds["behind_warn"], thresholds["behind_fatal"])
            since = f"for {facts['lag_seconds']:.0f} s"
        if level != "ok":
            reasons.append(_reason(level, "lag", f"{facts['lag_serials']} serials behind the primary {since}"))
    elif facts["replication_errors"]:
        errors = facts["replication_errors"]
        named = (
            "; ".join(f"{key}: {value}" for key, value in sorted(errors.items())[:3])
            if isinstance(errors, dict)
            else str(errors)
        )
        reasons.append(_reason("fatal", "replication", f"{len(errors)} replication errors: {named}"))
    return reasons


def event_reason(status: dict, now: float, thresholds: dict) -> dict | None:
    """Whether devpi-web's event processing (search index, plugins) lags the serial for too long."""
    serial, event_serial = status.get("serial"), status.get("event-serial")
    if serial is None or event_serial is None or serial <= event_serial:
        return None
    in_sync_at = status.get("event-serial-in-sync-at")
    since = in_sync_at if in_sync_at is not None else status.get("last-commit-timestamp")
    seconds = _since(now, since)
    level = by_age(seconds, thresholds["events_warn"], thresholds["events_fatal"])
    if level == "ok":
        return None
    return _reason(
        level, "events", f"event processing at serial {event_serial} of {serial}, out of sync for {seconds:.0f} s"
    )


def disk_reason(disk: dict | None, thresholds: dict) -> dict | None:
    """Free space under the serverdir below ``disk_free_warn`` / ``disk_free_fatal`` percent."""
    if not disk:
        return None
    percent = disk["free_percent"]
    if percent < thresholds["disk_free_fatal"]:
        level = "fatal"
    elif percent < thresholds["disk_free_warn"]:
        level = "warn"
    else:
        return None
    return _reason(level, "disk", f"{percent:.1f} % free under {disk['path']} ({disk['free_bytes']} bytes)")


def record_reasons(kind: str, record: dict | None, now: float, thresholds: dict) -> list[dict]:
    """The last ``kind`` (backup, drill) as recorded: failed, too old, or missing where expected."""
    if not record:
        level = thresholds["no_record_level"] if thresholds["backups_expected"] else "ok"
        return [] if level == "ok" else [_reason(level, kind, f"no {kind} recorded")]
    reasons = []
    if record.get("ok") is False:
        error = record.get("error") or "no error recorded"
        reasons.append(_reason("warn", kind, f"the last {kind} failed: {error}"))
    age = _since(now, record.get("at"))
    level = by_age(age, thresholds[f"{kind}_age_warn"], thresholds[f"{kind}_age_fatal"])
    if level != "ok":
        reasons.append(_reason(level, kind, f"the last {kind} is {age:.0f} s old"))
    return reasons


def assess(
    status: dict | None,
    now: float,
    thresholds: dict,
    *,
    error: str | None = None,
    expected_role: str | None = None,
    disk: dict | None = None,
    records: dict | None = None,
    unfinished: list[str] | None = None,
) -> dict:
    """
    The health of one server: ``level`` (ok, warn, fatal), ``reasons`` (each with its level, the
    check and a message), and the facts measured (role, serial, lag, seconds since the replica
    heard from its master, ...). ``status`` is /+status's ``result``, None with ``error`` when the
    server did not answer; ``expected_role`` what the formula deployed (master, replica);
    ``disk`` {path, free_bytes, free_percent}; ``records`` {backup: {at, ok, error}, drill: ...};
    ``unfinished``: snapshots a killed upgrade left (they keep deleted release files on disk).
    """
    reasons, facts = [], {}
    if status is None:
        reasons.append(_reason("fatal", "up", f"the server does not answer: {error or 'no answer'}"))
    else:
        role = role_of(status)
        facts = {"role": role, "serial": status.get("serial"), "event_serial": status.get("event-serial")}
        if role is None:
            reasons.append(_reason("warn", "role", f"unknown role {status.get('role')!r}"))
        elif expected_role and role != expected_role:
            reasons.append(_reason("fatal", "role", f"deployed as {expected_role}, the server says {role}"))
        if role == "replica":
            replica = replica_facts(status, now)
            facts.update({key: value for key, value in replica.items() if key != "never_heard_seconds"})
            reasons += replica_reasons(replica, thresholds)
        event = event_reason(status, now, thresholds)
        reasons += [event] if event else []
    disk_problem = disk_reason(disk, thresholds)
    reasons += [disk_problem] if disk_problem else []
    if unfinished:
        facts["unfinished_snapshots"] = len(unfinished)
        reasons.append(
            _reason(
                "warn",
                "snapshots",
                f"{len(unfinished)} unfinished snapshot(s) hold disk space: {', '.join(unfinished)}; "
                "sentry_data.recover removes them",
            )
        )
    if disk:
        facts["disk_free_percent"] = round(disk["free_percent"], 1)
    for kind in ("backup", "drill"):
        reasons += record_reasons(kind, (records or {}).get(kind), now, thresholds)
    return {
        "level": worst(reason["level"] for reason in reasons),
        "up": status is not None,
        "reasons": reasons,
        **facts,
    }
