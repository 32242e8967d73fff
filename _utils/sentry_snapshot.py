"""A snapshot of a stopped server's serverdir for an in-place upgrade to roll back to.

Release files (everything under ``+files``) are hard links: devpi-server
writes a file once under a new name (a temporary file renamed into place) and
removes it with unlink, never rewriting it, so a link shares nothing the new
server changes. Everything else (the sqlite database, ``.nodeinfo``,
``.serverversion``, devpi-web's search index) is copied for real, with owner,
mode and times. The snapshot is made in a hidden scratch folder beside the
serverdir and renamed to its name only once complete, so a folder under a
``_data-backup-`` name is always whole; ``scratch`` names the leftovers of one
that died. Filesystem only; reached as ``__utils__["sentry_snapshot.take"]``.
"""

from __future__ import annotations

import os
import shutil

from salt.exceptions import CommandExecutionError

LINKED = "+files"  # immutable release files: hard links


def scratch_path(snapshot: str) -> str:
    """Where ``snapshot`` is made before it is renamed into place (hidden, beside it)."""
    directory, name = os.path.split(os.path.abspath(snapshot))
    return os.path.join(directory, f".{name}.incomplete")


def scratch(directory: str) -> list[str]:
    """Snapshots in ``directory`` that never completed (their maker died)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [
        os.path.join(directory, name)
        for name in names
        if name.startswith("._data-backup-") and name.endswith(".incomplete")
    ]


def _copy_owned(source: str, target: str) -> None:
    shutil.copy2(source, target, follow_symlinks=False)
    stat = os.lstat(source)
    os.lchown(target, stat.st_uid, stat.st_gid)


def _link(source: str, target: str) -> None:
    os.link(source, target, follow_symlinks=False)


def _own_dirs(source: str, target: str) -> None:
    """copytree keeps the folders' modes and times, not their owners."""
    for root, dirs, _files in os.walk(source):
        for name in ["", *dirs]:
            stat = os.lstat(os.path.join(root, name))
            os.lchown(os.path.join(target, os.path.relpath(os.path.join(root, name), source)), stat.st_uid, stat.st_gid)


def _fill(serverdir: str, target: str) -> dict:
    linked = copied = 0
    os.mkdir(target)
    for name in sorted(os.listdir(serverdir)):
        source, into = os.path.join(serverdir, name), os.path.join(target, name)
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, into, symlinks=True, copy_function=_link if name == LINKED else _copy_owned)
            files = sum(len(found) for _root, _dirs, found in os.walk(source))
            linked, copied = (linked + files, copied) if name == LINKED else (linked, copied + files)
        else:
            _copy_owned(source, into)
            copied += 1
    _own_dirs(serverdir, target)
    shutil.copystat(serverdir, target)
    return {"linked": linked, "copied": copied}


def take(serverdir: str, snapshot: str) -> dict:
    """Snapshot the (stopped) ``serverdir`` as ``snapshot``, which must not exist and must be on the same
    filesystem. Returns its path and the files linked and copied; raises naming the cause (what it had
    made stays in its scratch folder, which ``scratch`` lists)."""
    if os.path.exists(snapshot):
        raise CommandExecutionError(f"{snapshot} exists already: the snapshot needs a new name")
    making = scratch_path(snapshot)
    try:
        counts = _fill(serverdir, making)
    except OSError as exc:
        raise CommandExecutionError(
            f"the snapshot of {serverdir} could not be made in {making} ({exc}); hard links need the "
            f"serverdir and server:backup_dir on one filesystem"
        ) from None
    os.rename(making, snapshot)
    return {"path": snapshot, **counts}
