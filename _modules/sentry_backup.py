"""Backups of a sentry instance that are known to restore: take one, rotate, and drill a restore.

``run`` exports the instance into ``backup-<timestamp>`` in its backup
folder while it serves (``devpi-export`` reads one consistent snapshot of the
database; see docs/backups-and-monitoring.md), keeps the newest ``keep`` and records the result.
``drill`` restores a backup into a scratch folder, runs devpi-fsck on it,
starts a server on it on a free loopback port as the service user and
compares it with what the backup lists (``sentry_health.check``), then
removes the server and the scratch copy, and records the result. ``last``
gives the records (``_utils/sentry_records.py``: health and metrics read them
there). Where the backups go is what ``sentry.backup`` rendered into
``/etc/sentry/backup/<program>.json``; the instance is
``sentry_server.settings``'s (``instance=PROGRAM``).

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_backup"

SERVER_BIN = "/usr/sbin/sentry-server"
SETTINGS_DIR = "/etc/sentry/backup"  # the contract with sentry/backup/init.sls
PREFIX = "backup-"
INCOMPLETE = ".incomplete"  # sentry_data.export's folder while it writes
SCRATCH_PREFIX = ".drill-"
MANIFEST = "sentry-backup-state.json"  # in each backup: what it held when it was made (sentry_health.export_state)
LOCK_WAIT = 3600  # seconds a backup or drill waits for the one running
LIVE_ATTEMPTS = 3  # a live export fails when a file it lists is deleted meanwhile: try again
STOP_WAIT = 30  # seconds the scratch server has between SIGTERM and SIGKILL
SERVER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_backup: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def settings(instance: str | None = None) -> dict:
    """
    The instance (``sentry_server.settings``) with its backup settings:
    ``backup_folder``, ``keep``, ``live``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_backup.settings
        salt '*' sentry_backup.settings instance=sentry-b
    """
    config = __salt__["sentry_server.settings"](instance)
    path = os.path.join(SETTINGS_DIR, f"{config['program']}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            backup = json.load(handle)
    except FileNotFoundError:
        raise CommandExecutionError(
            f"no backup settings for {config['program']} ({path}): set pillar sentry:backup:enabled: true "
            f"and apply sentry.backup"
        ) from None
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"{path} is unreadable ({exc}): apply sentry.backup again") from None
    return {**config, "backup_folder": backup["dir"], "keep": int(backup["keep"]), "live": bool(backup["live"])}


def _opened(path: str, flags: int, mode: str):
    """``path`` opened by root in a folder the service user may write in: never through a link put there
    (O_NOFOLLOW; with O_EXCL, never a file put there either)."""
    descriptor = os.open(path, flags | os.O_NOFOLLOW, 0o640)
    return os.fdopen(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


@contextlib.contextmanager
def _lock(config: dict, what: str):
    """One backup or drill of an instance at a time (a drill must not see its backup rotated away)."""
    os.makedirs(config["backup_folder"], mode=0o750, exist_ok=True)
    path = os.path.join(config["backup_folder"], ".lock")
    with _opened(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CommandExecutionError(
                        f"{what} of {config['program']}: another backup or drill has held {path} for "
                        f"{LOCK_WAIT} s; see 'salt-call sentry_backup.last' and its process"
                    ) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def backups(instance: str | None = None) -> list[str]:
    """
    The complete backups of the instance, newest first.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_backup.backups
    """
    return _complete(settings(instance))


def _complete(config: dict) -> list[str]:
    found = __utils__["sentry_backups.named"](config["backup_folder"], PREFIX)
    return [path for path in found if not path.endswith(INCOMPLETE)]


def _rotate(config: dict) -> list[str]:
    """Remove all but the newest ``keep`` backups, and what killed exports left; returns what went."""
    folder = config["backup_folder"]
    gone = __utils__["sentry_backups.beyond"](_complete(config), config["keep"])
    gone += [path for path in __utils__["sentry_backups.named"](folder, PREFIX) if path.endswith(INCOMPLETE)]
    for path in gone:
        shutil.rmtree(path)
    return gone


def _record(config: dict, kind: str, started: float, clock: float, **fields) -> dict:
    new = __utils__["sentry_records.entry"](started, time.monotonic() - clock, **fields)
    __utils__["sentry_records.write"](config["serverdir"], kind, new)
    return new


def run(instance: str | None = None, live: bool | None = None) -> dict:
    """
    Back the instance up now: export into ``backup-<timestamp>`` in its
    backup folder, remove all but the newest ``keep`` backups, and record
    the result (``last``). With ``live`` (the default from pillar
    ``sentry:backup:live``) the server keeps serving and nothing pauses;
    ``live=False`` stops its program during the export (writes and
    uncached reads pause that long: ``write_pause_seconds``).

    Returns the record: path, counts, seconds, removed backups. A failure is
    recorded too, then raised.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_backup.run
        salt '*' sentry_backup.run live=False instance=sentry-b
    """
    started, clock = time.time(), time.monotonic()
    config = settings(instance)
    live = config["live"] if live is None else bool(live)
    try:
        with _lock(config, "backup"):
            exported = _export(config, live)
            _write_manifest(exported["path"])
            removed = _rotate(config)
    except (CommandExecutionError, OSError) as exc:
        _record(config, "backup", started, clock, error=str(exc), live=live)
        raise CommandExecutionError(f"backup of {config['program']} failed: {exc}") from None
    counts = {key: exported[key] for key in ("users", "indexes", "files")}
    pause = 0.0 if live else exported["seconds"]
    return _record(
        config,
        "backup",
        started,
        clock,
        path=exported["path"],
        counts=counts,
        live=live,
        write_pause_seconds=pause,
        removed=removed,
    )


def _export(config: dict, live: bool) -> dict:
    """sentry_data.export into a new backup path; a live one is tried again when devpi-export failed."""
    for attempt in range(1, LIVE_ATTEMPTS + 1):
        dest = __utils__["sentry_backups.new_named"](config["backup_folder"], PREFIX)
        try:
            return __salt__["sentry_data.export"](dest=dest, stop=not live, instance=config["program"])
        except CommandExecutionError:
            if not live or attempt == LIVE_ATTEMPTS:
                raise
            time.sleep(attempt)  # a release deleted while it exported: the next snapshot lacks it
    raise AssertionError("unreachable")


def _write_manifest(path: str) -> None:
    """What the backup holds, read right after it was made: a drill compares the restore with it, so that
    damage to the backup later (a file's bytes, an entry of its dataindex) cannot hide."""
    state = __salt__["sentry_health.export_state"](path)
    manifest = os.path.join(path, MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(manifest)  # a link put there is removed itself, never followed
    with _opened(manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "w") as handle:
        json.dump(state, handle, sort_keys=True, default=sorted)


def _expected(path: str) -> dict:
    """The backup's manifest; for an export made otherwise (sentry_data.export), its dataindex now."""
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return __salt__["sentry_health.export_state"](path)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"the manifest {MANIFEST} of {path} is unreadable: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """
    A TCP port nothing listens on at ``host`` now (the kernel's pick).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_backup.free_port
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def drill(path: str | None = None, instance: str | None = None, port: int | None = None) -> dict:
    """
    Prove that a backup restores: import it (default: the newest) into a
    scratch folder beside the backups, run devpi-fsck on it, start a server
    on it on a free loopback port (or ``port``) as the service user, and
    check that it holds exactly what the backup lists: users, indexes and
    their settings, projects, versions and every release file with its hash
    (``sentry_health.check``). The server is stopped and the scratch folder
    removed whatever happened; the live instance is not touched. Records the
    result and the seconds of each step (``last``).

    Raises naming each difference (``user carol is missing``, ``alice/dev:
    pkg-1.0-py3-none-any.whl has sha256 ...``) or the step that failed.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_backup.drill
        salt '*' sentry_backup.drill /var/lib/sentry/backups/sentry-server/backup-20260101-020000
    """
    started, clock = time.time(), time.monotonic()
    config = settings(instance)
    steps: dict[str, float] = {}
    try:
        with _lock(config, "drill"):
            path = path or _newest(config)
            checked = _drill(config, path, port or free_port(), steps)
    except (CommandExecutionError, OSError) as exc:
        _record(config, "drill", started, clock, path=path, error=str(exc), steps=steps)
        raise CommandExecutionError(f"restore drill of {path or config['program']} failed: {exc}") from None
    counts = {key: checked[key] for key in ("users", "indexes", "projects", "files", "fsck_files")}
    return _record(config, "drill", started, clock, path=path, counts=counts, steps=steps)


def _newest(config: dict) -> str:
    found = _complete(config)
    if not found:
        raise CommandExecutionError(f"no backup in {config['backup_folder']} to drill: run sentry_backup.run first")
    return found[0]


def _timed(steps: dict, name: str, action, *args, **kwargs):
    clock = time.monotonic()
    try:
        return action(*args, **kwargs)
    finally:
        steps[name] = round(time.monotonic() - clock, 2)


def _drill(config: dict, path: str, port: int, steps: dict) -> dict:
    expected = _expected(path)  # what the backup held when it was made
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=config["backup_folder"])
    server = None
    try:
        # lchown: the scratch folder's own owner changes, whatever stands at its name
        os.lchown(scratch, pwd.getpwnam(config["user"]).pw_uid, grp.getgrnam(config["group"]).gr_gid)
        serverdir = os.path.join(scratch, "data")
        _timed(
            steps,
            "import",
            __salt__["sentry_data.import"],
            path,
            serverdir=serverdir,
            stop=False,
            restart=False,
            instance=config["program"],
        )
        url = f"http://127.0.0.1:{port}"
        server = _timed(steps, "start", _serve, config, serverdir, port, url, scratch)
        # devpi-fsck of every file, then the API against the backup's dataindex
        return _timed(
            steps,
            "check",
            __salt__["sentry_health.check"],
            path,
            url=url,
            serverdir=serverdir,
            instance=config["program"],
            expected=expected,
        )
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(scratch, ignore_errors=True)
        if os.path.exists(scratch):
            raise CommandExecutionError(f"could not remove the drill's scratch folder {scratch}; remove it by hand")


# The scratch server's secret is random and thrown away with it: its keys need no stretching (devpi's
# default would cost 512 MiB and seconds of CPU).
SCRATCH_KDF = ("--argon2-memory-cost", "8192", "--argon2-time-cost", "1", "--argon2-parallelism", "1")


def _serve(config: dict, serverdir: str, port: int, url: str, scratch: str) -> subprocess.Popen:
    """A server on ``serverdir`` at ``url``, as the service user, in a session of its own; once it answers."""
    log = _opened(os.path.join(scratch, "server.log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, "wb")  # the server's
    server = subprocess.Popen(
        [
            SERVER_BIN,
            "--serverdir",
            serverdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--offline-mode",
            "--",
            *SCRATCH_KDF,
        ],
        user=config["user"],
        group=config["group"],
        extra_groups=[],
        cwd=scratch,
        env={"PATH": SERVER_PATH, "LANG": "C.UTF-8", "HOME": scratch},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + config["ready_timeout"]
    while __utils__["sentry_api.server_version"](url) is None:
        if server.poll() is not None or time.monotonic() > deadline:
            _stop(server)
            with open(os.path.join(scratch, "server.log"), encoding="utf-8", errors="replace") as output:
                said = " | ".join(output.read().strip().splitlines()[-5:])
            why = f"exited {server.returncode}" if server.returncode is not None else "did not answer in time"
            raise CommandExecutionError(f"the drill's server on {url} {why}: {said}")
        time.sleep(0.25)
    return server


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's session, SIGKILL after STOP_WAIT s; returns once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def last(instance: str | None = None) -> dict:
    """
    The records of the instance's last backup and drill, and of the last
    successful ones (see ``_utils/sentry_records.py``); ``{}`` before the
    first.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_backup.last
    """
    return __utils__["sentry_records.read"](__salt__["sentry_server.settings"](instance)["serverdir"])
