"""Watching a sentry instance between deployments: its health level, and metrics for Prometheus.

``health`` asks the server's ``/+status`` (JSON) and measures the disk under
its serverdir; the level logic is ``_utils/sentry_levels.py``, the thresholds
are pillar ``sentry:monitor:health`` as the formula rendered them into the
instance's settings (``/etc/sentry/instances/<program>.json``). ``metrics``
gives the same facts in Prometheus' text format, and ``write_metrics`` puts
them where node_exporter's textfile collector reads them (cron runs it every
minute: state ``sentry.monitor``). The beacon ``sentry_health`` fires Salt
events when the level changes.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import os
import tempfile
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_monitor"

SERVER_BIN = "/usr/sbin/sentry-server"
STATUS_TIMEOUT = 10  # seconds: the beacon runs in the minion's own loop
RETCODES = {"ok": 0, "warn": 1, "fatal": 2}


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_monitor: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _settings(instance: str | None) -> dict:
    config = __salt__["sentry_server.settings"](instance)
    if "health" not in config:
        raise CommandExecutionError(
            f"the settings of {config['program']} carry no health thresholds (deployed by an older formula): "
            f"apply the sentry state again"
        )
    return config


def _status(url: str) -> tuple[dict | None, str | None]:
    """/+status's result, or None and why the server did not answer."""
    request = __utils__["sentry_api.request"]
    try:
        code, body = request("GET", f"{url}/+status", timeout=STATUS_TIMEOUT)
    except CommandExecutionError as exc:
        return None, str(exc)
    if code != 200:
        return None, f"GET {url}/+status answered {code}: {body.get('message', body)}"
    return body.get("result", {}), None


def _disk(path: str) -> dict | None:
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    total = stat.f_blocks * stat.f_frsize
    return {"path": path, "free_bytes": free, "free_percent": 100.0 * free / total if total else 0.0}


# --- the last backup and drill ------------------------------------------------------------


def records(instance: str | None = None) -> dict:
    """
    The last backup and the last restore drill of the instance as recorded:
    ``at`` (when it started, Unix seconds), ``ok``, ``error``; a kind never
    run is absent.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_monitor.records
    """
    config = __salt__["sentry_server.settings"](instance)
    found = {}
    for kind, runs in __utils__["sentry_records.read"](config["serverdir"]).items():
        last = runs.get("last") if isinstance(runs, dict) else None
        if kind in ("backup", "drill") and isinstance(last, dict):
            found[kind] = {"at": last.get("timestamp"), "ok": last.get("success"), "error": last.get("error")}
    return found


# --- health -------------------------------------------------------------------------------


def _assess(config: dict, status: dict | None, error: str | None, found: dict) -> dict:
    expected = "replica" if config["role"] == "replica" else "master"
    return __utils__["sentry_levels.assess"](
        status,
        time.time(),
        config["health"],
        error=error,
        expected_role=expected,
        disk=_disk(config["serverdir"]),
        records=found,
        unfinished=__utils__["sentry_backups.incomplete"](config["serverdir"]),
    )


def health(instance: str | None = None) -> dict:
    """
    The instance's health: ``level`` ok, warn or fatal, and ``reasons`` (each
    with its level, check and message): the server does not answer; its role
    is not the deployed one; a replica has not heard from its master, is
    behind it (serials, seconds) or has replication errors; event processing
    (devpi-web's search index) is out of sync; little free disk under the
    serverdir; the last backup or restore drill failed, is too old, or is
    missing where backups are enabled; unfinished snapshots left by a killed
    upgrade. Thresholds: pillar
    ``sentry:monitor:health``. salt-call exits 0 for ok, 1 for warn, 2 for fatal.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_monitor.health
        salt-call sentry_monitor.health instance=sentry-b
    """
    config = _settings(instance)
    status, error = _status(config["url"])
    report = _assess(config, status, error, records(config["program"]))
    report["instance"] = config["program"]
    __context__["retcode"] = RETCODES[report["level"]]
    return report


# --- metrics ------------------------------------------------------------------------------


def _release_files(serverdir: str) -> tuple[int, int]:
    """(release files under +files, bytes of the whole serverdir)."""
    files, size = 0, 0
    for top, _dirs, names in os.walk(serverdir):
        in_files = os.path.relpath(top, serverdir).split(os.sep)[0] == "+files"
        for name in names:
            try:
                size += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                continue  # removed meanwhile
            files += in_files
    return files, size


def metrics(instance: str | None = None) -> str:
    """
    The instance's metrics in Prometheus' text exposition format: up, serial,
    replica lag (serials, seconds), seconds since a replica heard from its
    master, health level (0 ok, 1 warn, 2 fatal), last backup and drill time
    and success (when recorded), release files, serverdir bytes.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_monitor.metrics
    """
    return _collect(instance)[0]


def _collect(instance: str | None) -> tuple[str, dict]:
    """The metrics' text and the health report they were made from."""
    config = _settings(instance)
    status, error = _status(config["url"])
    found = records(config["program"])
    report = _assess(config, status, error, found)
    files, size = _release_files(config["serverdir"])
    return __utils__["sentry_metrics.render"](config["program"], report, found, files, size), report


def write_metrics(path: str, instance: str | None = None) -> dict:
    """
    Write ``metrics`` to ``path`` for node_exporter's textfile collector: a
    temporary file in the same directory renamed over it, so the collector
    never reads half a file. Returns the path and the health level.

    CLI Example:

    .. code-block:: bash

        salt-call sentry_monitor.write_metrics /var/lib/prometheus/node-exporter/sentry.prom
    """
    if not os.path.isabs(path) or not path.endswith(".prom"):
        raise CommandExecutionError(f"{path}: the textfile collector reads absolute paths ending in .prom")
    text, report = _collect(instance)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".sentry-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return {"path": path, "level": report["level"]}
