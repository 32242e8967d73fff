"""Prometheus' text exposition format for one sentry instance: what sentry_monitor.metrics writes.

Pure: takes the health report (``sentry_levels.assess``), the recorded
backup and drill, and the counts; returns the text node_exporter's textfile
collector reads. Every metric carries an ``instance_name`` label (the
program), so several instances of one host share a file's namespace. A fact
not known (a master has no lag; nothing recorded) gives no sample rather
than a made-up one. Reached as ``__utils__["sentry_metrics.render"]``.
"""

from __future__ import annotations

LEVEL_VALUES = {"ok": 0, "warn": 1, "fatal": 2}

# name, type, help
METRICS = (
    ("sentry_up", "gauge", "1 when the server answered /+status, else 0."),
    ("sentry_health_level", "gauge", "Health level: 0 ok, 1 warn, 2 fatal (sentry_monitor.health)."),
    ("sentry_serial", "gauge", "The server's current serial (its last committed change)."),
    ("sentry_event_serial", "gauge", "The serial devpi-web's event processing has reached."),
    ("sentry_replica_lag_serials", "gauge", "Serials the replica is behind its master."),
    ("sentry_replica_lag_seconds", "gauge", "Seconds the replica has been behind its master (0 when in sync)."),
    ("sentry_replica_contact_age_seconds", "gauge", "Seconds since the replica last heard from its master."),
    ("sentry_replication_errors", "gauge", "Replication errors the replica reports."),
    ("sentry_last_backup_timestamp_seconds", "gauge", "When the last recorded backup finished (epoch)."),
    ("sentry_last_backup_success", "gauge", "1 when the last recorded backup succeeded, else 0."),
    ("sentry_last_drill_timestamp_seconds", "gauge", "When the last recorded restore drill finished (epoch)."),
    ("sentry_last_drill_success", "gauge", "1 when the last recorded restore drill succeeded, else 0."),
    ("sentry_release_files", "gauge", "Release files stored under the serverdir's +files."),
    ("sentry_serverdir_bytes", "gauge", "Bytes of all files under the serverdir."),
    ("sentry_disk_free_percent", "gauge", "Percent free of the filesystem under the serverdir."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def samples(report: dict, records: dict, release_files: int, serverdir_bytes: int) -> dict:
    """Metric name -> value, for what is known."""
    values = {
        "sentry_up": report["up"],
        "sentry_health_level": LEVEL_VALUES[report["level"]],
        "sentry_serial": report.get("serial"),
        "sentry_event_serial": report.get("event_serial"),
        "sentry_release_files": release_files,
        "sentry_serverdir_bytes": serverdir_bytes,
        "sentry_disk_free_percent": report.get("disk_free_percent"),
    }
    if report.get("role") == "replica":
        values.update(
            {
                "sentry_replica_lag_serials": report.get("lag_serials"),
                "sentry_replica_lag_seconds": report.get("lag_seconds"),
                "sentry_replica_contact_age_seconds": report.get("heard_seconds"),
                "sentry_replication_errors": len(report.get("replication_errors") or {}),
            }
        )
    for kind in ("backup", "drill"):
        record = records.get(kind) or {}
        values[f"sentry_last_{kind}_timestamp_seconds"] = record.get("at")
        values[f"sentry_last_{kind}_success"] = record.get("ok") if "ok" in record else None
    return {name: value for name, value in values.items() if value is not None}


def render(program: str, report: dict, records: dict, release_files: int, serverdir_bytes: int) -> str:
    """The text format: HELP and TYPE, then one sample labelled ``instance_name``, per known metric."""
    values = samples(report, records, release_files, serverdir_bytes)
    lines = []
    for name, kind, text in METRICS:
        if name not in values:
            continue
        lines += [
            f"# HELP {name} {text}",
            f"# TYPE {name} {kind}",
            f'{name}{{instance_name="{_label(program)}"}} {_number(values[name])}',
        ]
    return "\n".join(lines) + "\n"
