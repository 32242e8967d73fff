"""The data of a sentry instance: initialise its serverdir, export, import, the backups kept beside it.

Works with the package's commands (``/usr/sbin/sentry-server``): the export,
the import and the serverdir's initialisation as the service user (root only
makes and gives it the empty folders, never following a link). The instance
(serverdir, program, user) is the one the formula rendered
(``sentry_server.settings``); ``instance=PROGRAM`` picks one where a
host runs several. Nothing here deletes data: what is replaced is moved aside.
Mending an instance after an import or upgrade died half-way is
``sentry_recover``'s; ``sentry_data.recover`` hands over to it.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_data"
__func_alias__ = {"import_": "import"}

SERVER_BIN = "/usr/sbin/sentry-server"
VENV_BIN = "/opt/virtualenvs/sentry/bin"
NODEINFO = ".nodeinfo"
EXPORT_INDEX = "dataindex.json"
INCOMPLETE = ".incomplete"  # an export being written; renamed once complete


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_data: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _settings(instance: str | None) -> dict:
    return __salt__["sentry_server.settings"](instance)


def _run_as(user: str, argv: list[str], stdin: str | None = None, umask: str | None = None) -> dict:
    """Run ``argv`` as ``user`` (runuser, which costs nothing when nothing runs); output is never logged."""
    result = __salt__["cmd.run_all"](
        ["runuser", "-u", user, "--", *argv],
        python_shell=False,
        stdin=stdin,
        umask=umask,
        output_loglevel="quiet",
        ignore_retcode=True,
    )
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"{os.path.basename(argv[0])} failed (exit {result['retcode']}): "
            f"{(result['stderr'] or result['stdout']).strip()}"
        )
    return result


def is_initialised(serverdir: str | None = None, instance: str | None = None) -> bool:
    """
    Whether ``serverdir`` (default: the instance's) holds an initialised server.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.is_initialised
    """
    return os.path.exists(os.path.join(serverdir or _settings(instance)["serverdir"], NODEINFO))


def initialise(
    serverdir: str,
    root_password: str | None = None,
    master_url: str | None = None,
    no_root_pypi: bool = False,
    user: str = "sentry",
) -> dict:
    """
    Initialise an empty ``serverdir`` once, as ``user``: a master with
    ``root_password``, or a replica of ``master_url``. An initialised serverdir
    is never touched. The password reaches ``sentry-server --init`` on stdin.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.initialise /var/lib/sentry/data root_password='...'
        salt '*' sentry_data.initialise /var/lib/sentry/replica master_url=http://master:3141
    """
    if is_initialised(serverdir):
        raise CommandExecutionError(f"{serverdir} is already initialised; it is never initialised twice")
    argv = [SERVER_BIN, "--init", "--serverdir", serverdir]
    stdin = None
    if master_url:
        argv += ["--master-url", master_url]
    elif root_password:
        argv += ["--root-passwd-file", "-"]
        stdin = root_password + "\n"
    else:
        raise CommandExecutionError(
            f"initialising {serverdir} as a master needs root_password (or master_url to make a replica)"
        )
    if no_root_pypi:
        argv.append("--no-root-pypi")
    _run_as(user, argv, stdin=stdin)
    return {"serverdir": serverdir, "role": "replica" if master_url else "master", "initialised": True}


def gen_secret(path: str, user: str = "sentry") -> dict:
    """
    Create the shared secret file ``path`` (0600, owned by ``user``) if it is missing.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.gen_secret /var/lib/sentry/.secret
    """
    if os.path.exists(path):
        return {"path": path, "created": False}
    _run_as(user, [os.path.join(VENV_BIN, "devpi-gen-secret"), "--secretfile", path], umask="077")
    return {"path": path, "created": True}


def set_password(name: str, password: str, instance: str | None = None) -> dict:
    """
    Set ``name``'s password straight in the instance's serverdir, with
    devpi-passwd: for root, whose password no one can change over the API once
    pillar holds a new one (changing it there needs the old one).

    devpi-passwd writes the server's database, which the running server does
    not share with another process: the instance's program is stopped
    meanwhile (nginx still serves release files from disk) and started again
    if it was running. The password reaches devpi-passwd on stdin, in a session
    of its own (no terminal for getpass to prefer). On a master only: replicas
    copy it from their master. Returns the user and the seconds the server was
    stopped.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.set_password root password='...'
    """
    config = _settings(instance)
    if config["master_url"]:
        raise CommandExecutionError(
            f"{config['program']} is a replica of {config['master_url']}: set the password on its master"
        )
    if not password:
        raise CommandExecutionError(f"no password given for {name}")
    if not is_initialised(config["serverdir"]):
        raise CommandExecutionError(f"{config['serverdir']} holds no initialised server")
    started = time.monotonic()
    was_running = _stop_if_own(config, config["serverdir"], True)
    try:
        _run_as(
            config["user"],
            ["setsid", "--wait", os.path.join(VENV_BIN, "devpi-passwd"), "--serverdir", config["serverdir"], name],
            stdin=f"{password}\n{password}\n",
        )
    finally:
        if was_running:  # back in service, and settled for the states after this, when this returns
            __salt__["sentry_server.start"](config["program"], settled=True)
    return {"user": name, "set": True, "seconds_stopped": round(time.monotonic() - started, 2) if was_running else 0}


def read_export(path: str) -> dict:
    """
    The export's index at ``path``: its users, indexes and their files.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.read_export /var/lib/sentry/export-20260101-120000
    """
    try:  # root reads it: never through a link the service user, who wrote the export, could have put there
        descriptor = os.open(os.path.join(path, EXPORT_INDEX), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"{path} is not a readable sentry export: {exc}") from None


def export_counts(path: str) -> dict:
    """
    Users, indexes and release files in the export at ``path``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.export_counts /var/lib/sentry/export-20260101-120000
    """
    data = read_export(path)
    indexes = data.get("indexes", {})
    return {
        "users": len(data.get("users", {})),
        "indexes": len(indexes),
        "files": sum(len(index.get("files", [])) for index in indexes.values()),
        "root_pypi": "root/pypi" in indexes,
    }


def _stop_if_own(config: dict, serverdir: str, stop: bool) -> bool:
    """Stop the instance's program when ``serverdir`` is its own; True when it was running."""
    if not stop or os.path.abspath(serverdir) != os.path.abspath(config["serverdir"]):
        return False
    if not __salt__["sentry_server.running"](config["program"]):
        return False
    return __salt__["sentry_server.stop"](config["program"])


def _give(path: str, config: dict) -> None:
    """``path`` to the service user and group, the path itself: a link is not followed (root does this in
    folders the service user could have put a link in)."""
    os.lchown(path, pwd.getpwnam(config["user"]).pw_uid, grp.getgrnam(config["group"]).gr_gid)


def _empty_partial(dest: str, config: dict) -> str:
    """``DEST.incomplete``, empty and the service user's, made by root before anything stops: the user
    writes the export into it without needing to write in DEST's parent (a mount point, /srv)."""
    partial = dest.rstrip("/") + INCOMPLETE
    try:
        if os.path.exists(partial):
            shutil.rmtree(partial)  # an earlier attempt's, never complete
        os.mkdir(partial, 0o750)
        _give(partial, config)
    except OSError as exc:
        raise CommandExecutionError(f"cannot make the export directory {partial}: {exc}") from None
    return partial


def export(
    dest: str | None = None,
    serverdir: str | None = None,
    stop: bool = True,
    restart: bool = True,
    instance: str | None = None,
) -> dict:
    """
    Export the instance's data (or ``serverdir``'s) into ``dest`` (default
    ``export-<timestamp>`` beside the serverdir).

    The instance's program is stopped while its own serverdir is exported
    (unless ``stop=False``: the caller stopped it) and started again
    afterwards (unless ``restart=False``) if it was running. The export is
    written under ``DEST.incomplete`` and renamed when complete, so a crash
    never leaves something that looks like an export. Returns the path, the
    numbers of users, indexes and release files, and the seconds taken.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.export
        salt '*' sentry_data.export /srv/backups/sentry-export restart=False
    """
    started = time.monotonic()
    config = _settings(instance)
    serverdir = serverdir or config["serverdir"]
    dest = dest or __utils__["sentry_backups.new_path"](serverdir, "export")
    if os.path.abspath(dest).startswith(os.path.abspath(serverdir) + os.sep):
        raise CommandExecutionError(f"export destination {dest} lies inside the serverdir {serverdir}; choose another")
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise CommandExecutionError(f"export destination {dest} exists and is not empty; choose another")
    if not is_initialised(serverdir):
        raise CommandExecutionError(f"{serverdir} holds no initialised server: nothing to export")
    partial = _empty_partial(dest, config)
    was_running = False
    try:
        was_running = _stop_if_own(config, serverdir, stop)
        _run_as(config["user"], [SERVER_BIN, "--serverdir", serverdir, "--export", partial])
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty, checked above
        os.rename(partial, dest)
    except Exception:
        shutil.rmtree(partial, ignore_errors=True)  # never complete: it takes no room and looks like nothing
        raise
    finally:
        if was_running and restart:
            __salt__["sentry_server.start"](config["program"])  # back in service when this returns
    return {"path": dest, **export_counts(dest), "seconds": round(time.monotonic() - started, 2)}


def import_(
    src: str,
    serverdir: str | None = None,
    move_aside: bool = False,
    stop: bool = True,
    restart: bool = True,
    instance: str | None = None,
) -> dict:
    """
    Import the export at ``src`` into the instance's serverdir (or
    ``serverdir``), which must be fresh (exposed as ``sentry_data.import``).

    A serverdir that holds data is refused, unless ``move_aside=True`` moves
    it to ``_data-backup-<timestamp>`` beside it first: nothing is ever
    deleted. A failed import leaves the serverdir as it was before the import
    began. The files are given to the instance's user and group. devpi-web's
    events (search index, docs) are left to the server, which processes them
    once it runs: the import ends sooner. Its program
    is stopped meanwhile when the serverdir is its own (unless ``stop=False``)
    and started again (unless ``restart=False``).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.import /var/lib/sentry/export-20260101-120000
        salt '*' sentry_data.import /srv/backups/sentry-export move_aside=True
    """
    started = time.monotonic()
    config = _settings(instance)
    serverdir = serverdir or config["serverdir"]
    counts = export_counts(src)
    _readable_by(config["user"], src)
    occupied = os.path.exists(serverdir) and bool(os.listdir(serverdir))
    if occupied and not move_aside:
        raise CommandExecutionError(
            f"serverdir {serverdir} holds data; import only goes into a fresh one (move_aside=True moves it aside)"
        )
    unmovable = occupied and __utils__["sentry_backups.cannot_move_aside"](serverdir)
    if unmovable:
        raise CommandExecutionError(f"nothing was changed: {unmovable}")
    journal = __utils__["sentry_journal.read"](serverdir)
    owned = not __utils__["sentry_journal.mine"](journal)  # an upgrade calling keeps its own trail
    if owned:
        _refuse_over(journal, serverdir)
        __utils__["sentry_journal.begin"](serverdir, "import", source=src, program=config["program"])
    was_running = _stop_if_own(config, serverdir, stop)
    if owned:
        __utils__["sentry_journal.update"](serverdir, step="import", was_running=was_running)
    backup = None
    try:
        if occupied:
            backup = __utils__["sentry_backups.new_path"](serverdir, "backup")
            if owned:
                __utils__["sentry_journal.update"](serverdir, backup=backup)  # before the move: a crash finds it
            __utils__["sentry_backups.move_aside"](serverdir, "backup", backup)
        _import_into(serverdir, src, counts["root_pypi"], backup, config)
        if owned:
            __utils__["sentry_journal.end"](serverdir)
    except CommandExecutionError:
        if owned:
            __utils__["sentry_journal.end"](serverdir)  # put back as it was
        raise
    finally:
        if was_running and restart and __utils__["sentry_journal.read"](serverdir) is None:
            __salt__["sentry_server.start"](config["program"])  # back in service when this returns
    return {
        "path": serverdir,
        "source": src,
        "backup": backup,
        **counts,
        "seconds": round(time.monotonic() - started, 2),
    }


def _readable_by(user: str, src: str) -> None:
    """Refuse, before anything stops, an export the service user cannot read (it imports as that user)."""
    probe = ["runuser", "-u", user, "--", "test", "-r", os.path.join(src, EXPORT_INDEX)]
    if __salt__["cmd.retcode"](probe, python_shell=False, output_loglevel="quiet", ignore_retcode=True) != 0:
        raise CommandExecutionError(
            f"nothing was changed: the service user {user} cannot read {src} (it imports as that user, so that "
            f"a link in an export never reads what only root may): give it read access, e.g. "
            f"'chgrp -R {user} {src} && chmod -R g+rX {src}'"
        )


def _import_into(serverdir: str, src: str, root_pypi: bool, backup: str | None, config: dict) -> None:
    """Run the import into ``serverdir``, made (or taken) empty and given to the service user by root, as
    whose owner the package's sentry-server runs devpi-import; on failure put ``backup`` back and raise
    saying where everything is."""
    if not os.path.isdir(serverdir):
        os.mkdir(serverdir, 0o750)
    _give(serverdir, config)  # empty here: the folder itself
    # Without this the import adds a root/pypi mirror the exported server did not have.
    no_root_pypi = [] if root_pypi else ["--no-root-pypi"]
    # --no-events: devpi-web's search index and docs are brought up to date by the server once it
    # runs, not by the import while writes are down (the larger part of an import's time).
    # sentry-server drops to the serverdir's owner (the service user) for devpi-import itself: it needs root
    # to make its scratch folder beside the serverdir, whose parent may be root's (a mount point, /srv).
    argv = [SERVER_BIN, "--serverdir", serverdir, "--import", src, *no_root_pypi, "--no-events"]
    options = {"python_shell": False, "output_loglevel": "quiet", "ignore_retcode": True}
    result = __salt__["cmd.run_all"](argv, **options)
    if result["retcode"] == 2 and "--no-events" in result["stderr"]:  # a package from before the flag
        result = __salt__["cmd.run_all"](argv[:-1], **options)
    if result["retcode"] != 0:
        failed = __utils__["sentry_backups.put_back"](serverdir, backup) if backup else None
        kept = f"; what it wrote is in {failed}, the data is back in {serverdir}" if failed else ""
        raise CommandExecutionError(f"import of {src} failed: {(result['stderr'] or result['stdout']).strip()}{kept}")


def _refuse_over(journal: dict | None, serverdir: str) -> None:
    """Raise when an operation on ``serverdir`` runs, or died and was not recovered yet."""
    if journal is None:
        return
    what = __utils__["sentry_journal.describe"](journal)
    if __utils__["sentry_journal.alive"](journal):
        raise CommandExecutionError(f"{serverdir}: {what} is still running (pid {journal['pid']}); wait for it")
    raise CommandExecutionError(
        f"{serverdir}: {what}; run 'salt-call sentry_data.recover' first (it puts that data back)"
    )


def backups(instance: str | None = None) -> dict[str, list[str]]:
    """
    What upgrades, imports and exports left beside the instance's serverdir,
    by kind (``backup``: data moved aside, ``failed``: data of a failed
    attempt, ``export``, ``incomplete``: snapshots a killed upgrade never
    finished), newest first. sentry.prune_backups removes the older ones.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.backups
    """
    return __utils__["sentry_backups.listing"](_settings(instance)["serverdir"])


def prunable(keep: int, instance: str | None = None) -> list[str]:
    """
    What ``sentry.prune_backups`` removes: of each kind of the instance's
    backups, all but the newest ``keep`` (never the newest), and never one
    that the trail of an operation (``<serverdir>.operation.json``) names;
    unfinished snapshots, all, while there is no trail. Refuses while that
    trail cannot be read. Removes nothing itself.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.prunable 2
    """
    serverdir = _settings(instance)["serverdir"]
    trail = __utils__["sentry_journal.read"](serverdir) or {}
    if "unreadable" in trail:
        raise CommandExecutionError(
            f"{trail['trail']} cannot be read ({trail['unreadable']}): it may name a backup an interrupted "
            "operation needs; nothing is pruned until sentry_data.recover has mended the instance"
        )
    named = {os.path.abspath(value) for value in trail.values() if isinstance(value, str) and value.startswith("/")}
    gone = []
    for kind, paths in sorted(backups(instance).items()):
        if kind == "incomplete":  # unfinished snapshots, all of them, unless an operation may be making one
            gone += [] if trail else paths
            continue
        gone += [path for path in __utils__["sentry_backups.beyond"](paths, keep) if path not in named]
    return gone


def recover(instance: str | None = None) -> dict:
    """
    Handed over to ``sentry_recover.recover`` (the same argument, the same
    result): mend the instance after an import or upgrade died half-way. Kept
    here because the package's ``sentry-server``, the formula's guard and
    ``sentry_upgrade`` tell operators to run ``sentry_data.recover``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_data.recover
        salt '*' sentry_data.recover instance=sentry-b
    """
    return __salt__["sentry_recover.recover"](instance)
