"""What the last backups and restore drills of an instance did: one small JSON file beside its serverdir.

``sentry_backup.run`` and ``sentry_backup.drill`` write it; anything that
reports on an instance (health, metrics) reads it with ``read`` and needs
nothing else of the backup module. The file is ``<serverdir>.backups.json``
(e.g. ``/var/lib/sentry/data.backups.json``), root's, 0644, no secrets::

    {"backup": {"last": ENTRY, "last_success": ENTRY},
     "drill":  {"last": ENTRY, "last_success": ENTRY}}

where ENTRY is ``entry``'s result: ``time`` (ISO 8601, UTC), ``timestamp``
(Unix seconds), ``success``, ``seconds``, ``path`` (the backup made, or the
one drilled), ``counts`` (users, indexes, files, ...), ``error`` (None on
success) and what the kind adds (a backup its ``write_pause_seconds`` and
``removed`` backups; a drill the seconds of each ``steps``). A kind never
run is absent; ``last_success`` stays from an earlier run when the last
failed. Reached as ``__utils__["sentry_records.read"]`` and friends.
"""

from __future__ import annotations

import datetime
import json
import os

KINDS = ("backup", "drill")
SUFFIX = ".backups.json"


def path(serverdir: str) -> str:
    """Where the records of the instance serving ``serverdir`` are kept."""
    return os.path.abspath(serverdir).rstrip("/") + SUFFIX


def entry(
    started: float,
    seconds: float,
    path: str | None = None,
    counts: dict | None = None,
    error: str | None = None,
    **extra,
) -> dict:
    """One run's record: ``started`` is its Unix time; success is the absence of ``error``."""
    return {
        "time": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "timestamp": round(started, 3),
        "success": error is None,
        "seconds": round(seconds, 2),
        "path": path,
        "counts": counts,
        "error": error,
        **extra,
    }


def read(serverdir: str) -> dict:
    """The records of ``serverdir``'s instance; ``{}`` when nothing was ever recorded (or the file is unreadable)."""
    try:
        with open(path(serverdir), encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def merged(records: dict, kind: str, new: dict) -> dict:
    """``records`` with ``new`` as the last ``kind`` run (and its last success, when it succeeded)."""
    if kind not in KINDS:
        raise ValueError(f"records are kept of {', '.join(KINDS)}, not {kind!r}")
    result = {name: dict(value) for name, value in records.items() if name in KINDS and isinstance(value, dict)}
    result.setdefault(kind, {})["last"] = new
    if new["success"]:
        result[kind]["last_success"] = new
    return result


def write(serverdir: str, kind: str, new: dict) -> dict:
    """Record ``new`` as the last ``kind`` run of ``serverdir``'s instance; written whole or not at all."""
    records = merged(read(serverdir), kind, new)
    target = path(serverdir)
    partial = f"{target}.partial"
    # Root writes in the service user's folder: a new file, never through a link left at that name
    # (unlink removes a link itself; O_NOFOLLOW and O_EXCL refuse one put there meanwhile).
    try:
        os.unlink(partial)
    except FileNotFoundError:
        pass
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.fchmod(descriptor, 0o644)  # readable by health and metrics runs whatever the umask
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(records, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return records
