"""The history of a service user's upgrades: one JSON line per attempt in ``upgrades.jsonl`` in its home.

Filesystem only; instances of one user share the file, each entry names its
program. ``sentry_upgrade`` reaches it as ``__utils__["sentry_history.record"]``
and ``__utils__["sentry_history.last"]``.
"""

from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger(__name__)

FILE = "upgrades.jsonl"


def record(home: str, program: str, result: dict) -> None:
    """Append ``result`` with the time and ``program``; a log that cannot be written is only warned about
    (the upgrade itself is done or rolled back by then)."""
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "program": program, **result}
    try:
        # In the service user's home: appended to the file itself, never through a link left at its name.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        with os.fdopen(os.open(os.path.join(home, FILE), flags, 0o644), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
    except OSError as exc:
        log.warning("sentry_history: could not record the upgrade in %s: %s", home, exc)


def last(home: str, program: str) -> dict | None:
    """The newest entry of ``program``, or None."""
    try:
        with open(os.path.join(home, FILE), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        entry = json.loads(line)
        if entry.get("program", program) == program:  # entries before 'program' was kept are anyone's
            return entry
    return None
