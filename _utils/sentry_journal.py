"""The trail an operation on a serverdir's data leaves, so that a crash never hides the data.

An import or an upgrade writes ``<serverdir>.operation.json`` before it stops
anything and keeps it current at every step: the step, where the data went
aside (written *before* it moves), the package version it started from, what
it stopped. The file goes when the operation ends, done or rolled back.

Found with no live owner, it means the operation died (kill -9, OOM, reboot).
Then ``sentry_recover.recover`` (also ``sentry_data.recover``) puts things
back from it; the formula refuses to initialise or start a server over it;
and ``sentry-server`` (the package's daemon command) will not serve that
serverdir unless the record says the operation started the server itself
(``serve``). Filesystem only; reached as
``__utils__["sentry_journal.begin"]`` and friends.
"""

from __future__ import annotations

import json
import os
import time

SUFFIX = ".operation.json"


def path(serverdir: str) -> str:
    return os.path.abspath(serverdir).rstrip("/") + SUFFIX


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), which tells a reused pid from the owner."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _partial(target: str, record: dict) -> str:
    """The record in a file of its own beside ``target``, flushed to disk. Made new and never through a
    link: the folder is the service user's, who could have left a link at that name for root to follow."""
    partial = f"{target}.{os.getpid()}.tmp"
    try:
        os.unlink(partial)  # a killed run's (the link itself, if it is one: unlink follows none)
    except FileNotFoundError:
        pass
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    return partial


def _sync_folder(target: str) -> None:
    directory = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write(serverdir: str, record: dict) -> dict:
    """Replace the record atomically and durably: a crash leaves the old one or the new one."""
    target = path(serverdir)
    os.replace(_partial(target, record), target)
    _sync_folder(target)
    return record


def _create(serverdir: str, record: dict) -> dict:
    """Make the record where none is, atomically: of two operations beginning at once, one gets
    FileExistsError (a hard link, unlike a rename, never replaces what is there)."""
    target = path(serverdir)
    partial = _partial(target, record)
    try:
        os.link(partial, target)
    finally:
        os.unlink(partial)
    _sync_folder(target)
    return record


def read(serverdir: str) -> dict | None:
    """The record of the operation on ``serverdir``, or None when there is none."""
    try:
        with open(path(serverdir), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # written atomically, so only by hand (or a disk's fault)
        return {"operation": "unknown", "step": "unknown", "unreadable": str(exc), "trail": path(serverdir)}


def alive(record: dict) -> bool:
    """Whether the process that owns ``record`` still runs (the same process, not a reused pid)."""
    pid = record.get("pid")
    return isinstance(pid, int) and _process_start(pid) is not None and _process_start(pid) == record.get("pid_start")


def mine(record: dict | None) -> bool:
    """Whether this very process owns ``record`` (an upgrade calling an import, say)."""
    return bool(record) and record.get("pid") == os.getpid() and alive(record)


def begin(serverdir: str, operation: str, **facts) -> dict:
    """Start the record of ``operation`` owned by this process; raises FileExistsError over another's,
    also when another begins at the same moment."""
    if read(serverdir) is not None:
        raise FileExistsError(path(serverdir))
    pid = os.getpid()
    return _create(
        serverdir,
        {
            "operation": operation,
            "serverdir": os.path.abspath(serverdir),
            "pid": pid,
            "pid_start": _process_start(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "step": "begin",
            "backup": None,
            "serve": False,
            **facts,
        },
    )


def update(serverdir: str, **facts) -> dict:
    """Record ``facts`` (the step, a backup about to be made, ...) before acting on them."""
    record = read(serverdir) or {}
    return _write(serverdir, {**record, **facts, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def end(serverdir: str) -> None:
    """The operation is over (done, or everything put back): no trail left."""
    try:
        os.unlink(path(serverdir))
    except FileNotFoundError:
        pass


def describe(record: dict) -> str:
    """One sentence for the operator: what was interrupted, where, and where the data is."""
    if record.get("unreadable"):
        return (
            f"an interrupted operation left {record['trail']}, which cannot be read ({record['unreadable']}); "
            "it is the only record of where the data went: read it, put the data back by hand (or mend the "
            "file), and move it away before anything else"
        )
    where = f" at step '{record.get('step')}'" if record.get("step") else ""
    text = f"an interrupted {record.get('operation', 'operation')}{where} (started {record.get('started', '?')})"
    if record.get("backup") and os.path.exists(record["backup"]):
        text += f" left the previous data in {record['backup']}"
    return text
