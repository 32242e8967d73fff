"""What sentry keeps beside a serverdir: exports and serverdirs moved aside, named kind prefix + timestamp.

Filesystem only (no Salt functions), shared by sentry_data and sentry_upgrade
as ``__utils__["sentry_backups.move_aside"]`` and friends. Nothing here deletes.
"""

from __future__ import annotations

import os
import re
import time

# prefix + timestamp, in the serverdir's parent directory, which instances may share: the prefix names the
# serverdir. The default serverdir (.../data) keeps the names of earlier releases.
KINDS = {"backup": "_{name}-backup-", "failed": "_{name}-failed-", "export": "export-{name}-"}
STAMPED = re.compile(r"[0-9]{8}-[0-9]{6}(?:-1)*")


def prefix(serverdir: str, kind: str) -> str:
    """The name of ``kind`` (see KINDS) beside ``serverdir``, up to its timestamp."""
    name = os.path.basename(os.path.abspath(serverdir).rstrip("/"))
    if kind == "export" and name == "data":
        return "export-"
    return KINDS[kind].format(name=name)


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def new_path(serverdir: str, kind: str) -> str:
    """A path beside ``serverdir`` for a new ``kind`` (see KINDS) that does not exist yet."""
    return new_named(os.path.dirname(os.path.abspath(serverdir)), prefix(serverdir, kind))


def new_named(directory: str, prefix: str) -> str:
    """A path in ``directory`` named ``prefix`` + timestamp that does not exist yet."""
    path = os.path.join(directory, prefix + timestamp())
    while os.path.exists(path):
        path += "-1"
    return path


def cannot_move_aside(serverdir: str) -> str:
    """Why ``serverdir`` cannot be moved aside (renamed beside itself), or '': a mount point cannot be
    renamed (EBUSY), so what moves the data aside must refuse before anything stops."""
    serverdir = os.path.abspath(serverdir).rstrip("/")
    if not os.path.ismount(serverdir):
        return ""
    return (
        f"{serverdir} is a mount point, which cannot be moved aside: mount the volume one level up "
        f"({os.path.dirname(serverdir)}) with the serverdir a folder on it, or set sentry:server:serverdir to a "
        f"folder inside the volume (e.g. {serverdir}/data), its backups then beside it on the same volume"
    )


def move_aside(serverdir: str, kind: str, aside: str | None = None) -> str:
    """Rename ``serverdir`` to ``aside`` (default: a new ``kind`` path beside it) and leave an empty one
    (same owner, mode). Returns where the data went."""
    aside = aside or new_path(serverdir, kind)
    stat = os.stat(serverdir)
    os.rename(serverdir, aside)
    os.mkdir(serverdir, stat.st_mode & 0o7777)
    # Not through a link: the service user, who owns the parent, could have put one at that name meanwhile.
    os.lchown(serverdir, stat.st_uid, stat.st_gid)
    return aside


def put_back(serverdir: str, backup: str) -> str | None:
    """Undo move_aside, also half done: what is in ``serverdir`` now goes to a ``failed`` path
    (returned; None when it held nothing), and ``backup`` takes its place."""
    failed = None
    if os.path.isdir(serverdir) and os.listdir(serverdir):
        failed = move_aside(serverdir, "failed")
    if os.path.isdir(serverdir):
        os.rmdir(serverdir)  # empty
    os.rename(backup, serverdir)
    return failed


def import_scratch(serverdir: str) -> list[str]:
    """Where an import into ``serverdir`` was writing when it died: ``sentry-server --import`` fills a
    scratch dir ``.<name>.import-*`` beside it and renames that into place only once complete."""
    serverdir = os.path.abspath(serverdir).rstrip("/")
    directory, prefix = os.path.dirname(serverdir), f".{os.path.basename(serverdir)}.import-"
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [
        os.path.join(directory, name)
        for name in names
        if name.startswith(prefix) and os.path.isdir(os.path.join(directory, name))
    ]


def named(directory: str, prefix: str) -> list[str]:
    """The folders in ``directory`` whose names start with ``prefix``, newest first (the names end in a
    timestamp)."""
    try:
        names = sorted(os.listdir(directory), reverse=True)
    except FileNotFoundError:
        return []
    return [
        os.path.join(directory, name)
        for name in names
        if name.startswith(prefix) and os.path.isdir(os.path.join(directory, name))
    ]


def stamped(serverdir: str, start: str, end: str = "") -> list[str]:
    """The folders beside ``serverdir`` named ``start`` + a timestamp alone + ``end``, newest first: not
    another instance's whose name extends ``start``, not a folder still being written."""
    directory = os.path.dirname(os.path.abspath(serverdir))
    found = []
    for path in named(directory, start):
        name = os.path.basename(path)
        if name.endswith(end) and STAMPED.fullmatch(name[len(start) : len(name) - len(end)]):
            found.append(path)
    return found


def incomplete(serverdir: str) -> list[str]:
    """Snapshots of ``serverdir`` that never completed (their maker was killed), newest first: hidden
    ``._<name>-backup-<timestamp>.incomplete`` folders beside it (sentry_snapshot.scratch_path)."""
    return stamped(serverdir, "." + prefix(serverdir, "backup"), ".incomplete")


def listing(serverdir: str) -> dict[str, list[str]]:
    """The paths of each kind beside ``serverdir`` that are its own, newest first; ``incomplete``:
    snapshots never completed."""
    found = {kind: stamped(serverdir, prefix(serverdir, kind)) for kind in KINDS}
    found["incomplete"] = incomplete(serverdir)
    return found


def beyond(paths: list[str], keep: int) -> list[str]:
    """What goes when only the newest ``keep`` of ``paths`` (newest first, as ``named`` lists them) stay;
    never the newest one, whatever ``keep`` says."""
    return list(paths[max(keep, 1) :])
