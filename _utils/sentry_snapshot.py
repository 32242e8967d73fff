"""A snapshot of a stopped server's serverdir for an in-place upgrade to roll back to.

Release files (everything under ``+files``) are hard links: devpi-server
writes a file once under a new name (a temporary file renamed into place) and
removes it with unlink, never rewriting it, so a link shares nothing the new
server changes. Everything else (the sqlite database, ``.nodeinfo``,
``.serverversion``, devpi-web's search index) is copied for real, with owner,
mode and times. The snapshot is made in a hidden scratch folder beside the
serverdir and renamed to its name only once complete, so a folder under a
``_data-backup-`` name is always whole. One that fails is removed at once;
one whose maker was killed is listed by ``sentry_backups.incomplete`` and
removed by ``sentry_data.recover`` or the next in-place upgrade (links and
copies of the serverdir: nothing is lost).

Linking every release file while the server is stopped grows with their
number, so ``prepare`` links them beforehand, while the server still serves,
into a hidden folder beside the snapshots (``prepared_path``); ``take`` then
only brings those links up to date (a file uploaded or removed meanwhile)
comparing the inode numbers the two folders' listings carry, no file read,
no link made for what did not change. A prepared folder holds hard links
only: deleting it loses nothing, and the next ``prepare`` reuses it.
Filesystem only; reached as ``__utils__["sentry_snapshot.take"]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from salt.exceptions import CommandExecutionError

LINKED = "+files"  # immutable release files: hard links
PREPARED = ".sentry-snapshot-prepared"  # release files linked while the server serves, for the next take


def scratch_path(snapshot: str) -> str:
    """Where ``snapshot`` is made before it is renamed into place (hidden, beside it)."""
    directory, name = os.path.split(os.path.abspath(snapshot))
    return os.path.join(directory, f".{name}.incomplete")


def prepared_path(directory: str) -> str:
    """Where ``prepare`` links release files for the next snapshot made in ``directory``."""
    return os.path.join(directory, PREPARED)


def _remove(entry: os.DirEntry) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)


def _sync_links(source: str, target: str) -> int:
    """Make ``target`` a tree of hard links to every file under ``source``, and nothing else: what is
    linked already (the same inode number in both listings) is left as it is. A file that goes while
    the server serves (a temporary one renamed) is skipped. A folder made gets the source's mode and
    owner (not its times: each link added changes them). Returns the files under ``target``."""
    try:
        entries = list(os.scandir(source))
    except FileNotFoundError:  # a folder removed while it serves
        entries = []
    if not os.path.isdir(target):
        os.mkdir(target)
        with contextlib.suppress(FileNotFoundError):
            stat = os.lstat(source)
            os.chmod(target, stat.st_mode & 0o7777)
            os.lchown(target, stat.st_uid, stat.st_gid)
    have = {entry.name: entry for entry in os.scandir(target)}
    files = 0
    for entry in entries:
        into, had = os.path.join(target, entry.name), have.pop(entry.name, None)
        if entry.is_dir(follow_symlinks=False):
            if had is not None and not had.is_dir(follow_symlinks=False):
                os.unlink(into)
            files += _sync_links(entry.path, into)
            continue
        if had is not None:
            if not had.is_dir(follow_symlinks=False) and had.inode() == entry.inode():
                files += 1
                continue
            _remove(had)
        try:
            os.link(entry.path, into, follow_symlinks=False)
        except FileNotFoundError:
            continue
        files += 1
    for gone in have.values():
        _remove(gone)
    return files


def prepare(serverdir: str, directory: str) -> dict:
    """Link ``serverdir``'s release files into ``prepared_path(directory)`` while the server serves, so
    that the next ``take`` into ``directory`` has little left to link. Returns the path and the files."""
    path = prepared_path(directory)
    try:
        os.makedirs(path, exist_ok=True)
        files = _sync_links(os.path.join(serverdir, LINKED), os.path.join(path, LINKED))
    except OSError as exc:
        raise CommandExecutionError(
            f"release files of {serverdir} could not be linked into {path} ({exc}); hard links need the "
            f"serverdir and its parent folder on one filesystem"
        ) from None
    return {"path": path, "linked": files}


def _copy_owned(source: str, target: str) -> None:
    shutil.copy2(source, target, follow_symlinks=False)
    stat = os.lstat(source)
    os.lchown(target, stat.st_uid, stat.st_gid)


def _own_dirs(source: str, target: str) -> None:
    """copytree keeps the folders' modes and times, not their owners (``+files``' are set as made)."""
    for root, dirs, _files in os.walk(source):
        if root == source and LINKED in dirs:
            dirs.remove(LINKED)
        for name in ["", *dirs]:
            stat = os.lstat(os.path.join(root, name))
            os.lchown(os.path.join(target, os.path.relpath(os.path.join(root, name), source)), stat.st_uid, stat.st_gid)


def _fill(serverdir: str, target: str) -> dict:
    """``target`` (absent, or holding a prepared ``+files``) made the serverdir's snapshot."""
    linked = copied = 0
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(serverdir)):
        source, into = os.path.join(serverdir, name), os.path.join(target, name)
        if name == LINKED and os.path.isdir(source):
            linked += _sync_links(source, into)
        elif os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, into, symlinks=True, copy_function=_copy_owned)
            copied += sum(len(found) for _root, _dirs, found in os.walk(source))
        else:
            _copy_owned(source, into)
            copied += 1
    if not os.path.isdir(os.path.join(serverdir, LINKED)):
        shutil.rmtree(os.path.join(target, LINKED), ignore_errors=True)  # prepared, then gone
    _own_dirs(serverdir, target)
    shutil.copystat(serverdir, target)
    return {"linked": linked, "copied": copied}


def take(serverdir: str, snapshot: str) -> dict:
    """Snapshot the (stopped) ``serverdir`` as ``snapshot``, which must not exist and must be on the same
    filesystem; what ``prepare`` linked beside it is taken over. Returns its path and the files linked
    and copied; raises naming the cause, its scratch folder removed (links and copies: nothing lost)."""
    if os.path.exists(snapshot):
        raise CommandExecutionError(f"{snapshot} exists already: the snapshot needs a new name")
    making = scratch_path(snapshot)
    prepared = prepared_path(os.path.dirname(os.path.abspath(snapshot)))
    try:
        if os.path.isdir(prepared) and not os.path.exists(making):
            os.rename(prepared, making)
        counts = _fill(serverdir, making)
    except OSError as exc:
        shutil.rmtree(making, ignore_errors=True)  # a disk-full failure must not stay disk-full
        raise CommandExecutionError(
            f"the snapshot of {serverdir} could not be made in {making} ({exc}; the partial copy is removed); "
            f"hard links need the serverdir and its parent folder on one filesystem"
        ) from None
    os.rename(making, snapshot)
    return {"path": snapshot, **counts}
