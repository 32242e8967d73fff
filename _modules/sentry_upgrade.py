"""Upgrades of a sentry instance that can be trusted: in place when the data allows, else a master by export
and import, a replica by resync.

Each upgrade checks its result and rolls itself back on any failure, saying
which step failed and what it put back; nothing is deleted. The instance
(package, serverdir, program, nginx service, URL) is the one the formula
rendered (``sentry_server.settings``), so the orchestration (``sentry.upgrade``)
passes only the version. Results are appended to ``upgrades.jsonl`` in the
service user's home (``sentry_upgrade.last``; _utils/sentry_history.py). The
bookkeeping of an attempt (steps, journal, rollback) is _utils/sentry_attempt.py;
the choice of method is ``sentry_inplace.method``, the in-place steps
_utils/sentry_inplace.py.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_upgrade"

SERVER_BIN = "/usr/sbin/sentry-server"
IN_PLACE = "in_place"  # sentry_inplace.method's answer when the new server runs on the serverdir as it is


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_upgrade: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _settings(instance: str | None) -> dict:
    return __salt__["sentry_server.settings"](instance)


def _fetch(package: str, version: str, refresh: bool) -> None:
    """Download ``version`` of ``package`` into apt's cache while the server still serves."""
    __salt__["pkg.install"](package, version=version, refresh=refresh, downloadonly=True)


def _install(package: str, version: str, refresh: bool, back: bool = False) -> None:
    """Install exactly ``version`` of ``package`` (up or down) from the configured apt repositories.

    ``back``: a rollback, over whatever the failed install left. Salt lets apt downgrade only from a
    version it lists as installed, and a release whose maintainer script failed is not listed (dpkg
    holds it half-configured): apt's --force-yes then allows the downgrade.
    """
    __salt__["pkg.install"](package, version=version, refresh=refresh, **({"force_yes": True} if back else {}))
    installed = __salt__["pkg.version"](package)
    if installed != version:
        raise CommandExecutionError(f"{package} {version} was asked for, {installed or 'nothing'} is installed")


def _record(result: dict, config: dict) -> None:
    __utils__["sentry_history.record"](config["home"], config["program"], result)


def last(instance: str | None = None) -> dict | None:
    """
    The last upgrade the instance went through (master or replica), with the
    versions before and after, and the time the server was down; None when
    it never went through one.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_upgrade.last
        salt '*' sentry_upgrade.last instance=sentry-b
    """
    config = _settings(instance)
    return __utils__["sentry_history.last"](config["home"], config["program"])


def _journal() -> dict:
    """The journal beside the serverdir, as sentry_attempt's Attempt writes it."""
    return {name: __utils__[f"sentry_journal.{name}"] for name in ("begin", "update", "end")}


def _host_actions(config: dict) -> dict:
    """What a rollback does on this host (sentry_attempt.roll_back's ``act``); __utils__ functions looked up
    here, as in _in_place_actions."""
    package, program, status = config["package"], config["program"], __utils__["sentry_api.status"]
    return {
        "stop": lambda: __salt__["sentry_server.stop"](program),
        "start": lambda: _start(config),
        "start_nginx": lambda: __salt__["sentry_service.start"](config["nginx_service"]),
        "put_back": __utils__["sentry_backups.put_back"],
        "exists": os.path.isdir,
        "installed": lambda: __salt__["pkg.version"](package),
        "reinstall": lambda version: _install(package, version, refresh=False, back=True),
        "answers": lambda: _answers(status, config["url"]),
    }


def _answers(status: Callable[[str], dict], url: str) -> bool:
    try:
        return status(url)["up"]
    except CommandExecutionError:
        return False


def _roll_back(state: dict, version: str, config: dict, settled: Callable[[], None] = lambda: None) -> str:
    """Undo what this attempt changed (``state``); returns what was done, raises naming what is left otherwise.

    ``settled`` runs once data and package are back, before anything starts (it ends the journal).
    """
    return __utils__["sentry_attempt.roll_back"](state, version, config, _host_actions(config), settled)


def _stop_writes_and_reads(attempt, config: dict) -> None:
    attempt.mark(stopped=True)
    __salt__["sentry_server.stop"](config["program"])
    if config["nginx_service"]:
        attempt.mark(nginx_stopped=True)
        _stop_nginx_at_once(config["nginx_service"])


def _stop_nginx_at_once(service: str) -> None:
    """Within the write window: no graceful stop waiting out the replicas' long polls of /+changelog (5 s
    on Debian) and no init script's second of sleep after it."""
    __salt__["sentry_service.stop_nginx_at_once"](service)


def _refuse_unmovable(config: dict) -> None:
    """Before anything stops: the export and remake methods move the serverdir aside, which a mount point
    refuses (in place, a snapshot needs the serverdir and its parent on one filesystem, which it is not)."""
    why = __utils__["sentry_backups.cannot_move_aside"](config["serverdir"])
    if why:
        raise CommandExecutionError(f"nothing was changed: {why}")


def _move_data_aside(attempt, config: dict) -> None:
    """To ``_data-backup-<timestamp>``, named in the journal before it moves."""
    attempt.mark(backup=__utils__["sentry_backups.new_path"](config["serverdir"], "backup"))
    __utils__["sentry_backups.move_aside"](config["serverdir"], "backup", attempt.changed["backup"])


def _recover_first(config: dict) -> dict | None:
    """Put back what an interrupted attempt left (its trail beside the serverdir), before a new one."""
    journal = __utils__["sentry_journal.read"](config["serverdir"])
    if journal is None:
        return None
    return __salt__["sentry_data.recover"](config["program"])


def _status(config: dict) -> dict:
    """The instance's status; ``up: False`` with the ``error`` when it does not answer (no exit code set)."""
    return _status_reader(config)()


def _status_reader(config: dict) -> Callable[[], dict]:
    """``_status`` for a _utils module to call back: sentry_api.status looked up here, as __utils__ is
    missing from the dunders a lambda sees when a util calls it."""
    status = __utils__["sentry_api.status"]

    def read() -> dict:
        try:
            return status(config["url"])
        except CommandExecutionError as exc:
            return {"up": False, "url": config["url"], "error": str(exc)}

    return read


def _start(config: dict) -> dict:
    return __salt__["sentry_server.start"](config["program"])


def _check_master(config: dict, version: str) -> None:
    """Raise, with nothing changed yet, unless the instance is a master that answers and may be upgraded."""
    __salt__["sentry_server.alone"](version, instance=config["program"])
    current = _status(config)
    if not current["up"]:
        raise CommandExecutionError(f"nothing was changed: {current['error']}")
    if current["role"] != "master":
        raise CommandExecutionError(f"{config['url']} is a replica: upgrade it with sentry_upgrade.replica")


def master(
    version: str,
    refresh: bool = True,
    reads_elsewhere: bool = False,
    instance: str | None = None,
    method: str = "auto",
) -> dict:
    """
    Upgrade a master (or standalone) server to package ``version`` the safe
    way: download it, then choose (``sentry_inplace.method``). In place when
    the new server runs on the serverdir as it is (same devpi database
    version): devpi-fsck of its serverdir and hard links to its release files
    for the snapshot (``sentry_snapshot.prepare``) while it still serves, stop nginx,
    read what the server holds in brief (serial, uuid, users and indexes),
    stop the server, snapshot the serverdir to ``_data-backup-<timestamp>``
    (the links brought up to date, the rest copied), install, start on the same serverdir, check
    it holds the same in brief: in the write window only the database (devpi's
    whole changelog) and the folders' listings are copied, the release files
    having been linked before. Otherwise, or with ``method=export``: stop the
    server and nginx, export, move the data to ``_data-backup-<timestamp>``,
    install the new version, import into a fresh serverdir, start, check its
    health (``sentry_health.check`` against the export as it was right after
    the export). Then start nginx. The result's ``method`` says which and why.

    On any failure it rolls back what it changed: the failed serverdir goes to
    ``_data-failed-<timestamp>``, the backup comes back, the previous version
    is reinstalled and started; the error names the step. Nothing is deleted.
    At ``version`` already, it changes nothing.

    The result (also kept for ``last``) holds the seconds writes were refused
    (``write_outage_seconds``: server stopped until healthy again) and reads
    were (``read_outage_seconds``: nginx stopped until started again; 0 with
    ``reads_elsewhere=True``, which sentry.upgrade passes when a front sent the
    reads to caught-up replicas meanwhile).

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_upgrade.master 6.20.3-1
        salt sentry-master sentry_upgrade.master 6.20.3-1 method=export
    """
    config = _settings(instance)
    recovered, before_version = _begin(config)
    if before_version == version:
        __utils__["sentry_api.status"](config["url"])  # answers, or says why not
        return {"changed": False, "role": "master", "version": {"old": before_version, "new": version}}
    _check_master(config, version)
    chosen: dict = {}

    def choose(attempt) -> None:  # downloaded, still serving
        chosen.update(method=_method(config, version, method))
        if chosen["method"]["method"] != IN_PLACE:
            _refuse_unmovable(config)
        if chosen["method"]["method"] == IN_PLACE:
            # What grows with the data is done here, while it serves: devpi-fsck of every release file,
            # and the snapshot's links to them (the stop only brings them up to date).
            attempt.step("check before")
            chosen.update(fsck=__salt__["sentry_health.fsck"](instance=config["program"]))
            _link_release_files(attempt, config)

    def upgrade(attempt, down: Callable[[], float]) -> dict:
        if chosen["method"]["method"] == IN_PLACE:
            _stop_holding(attempt, config, chosen)
            check = lambda: __salt__["sentry_health.check_brief"](chosen["at_stop"], instance=config["program"])  # noqa: E731
            fields = __utils__["sentry_inplace.master"](attempt, _in_place_actions(config, version, check))
            fields["health"]["fsck_before"] = chosen["fsck"]
        else:
            _stop_writes_and_reads(attempt, config)
            fields = _export_import(attempt, config, version)
        write_outage = down()
        attempt.mark(healthy=True)  # from here a recovery completes the upgrade rather than undoing it
        attempt.step("start nginx")
        if config["nginx_service"]:
            __salt__["sentry_service.start"](config["nginx_service"])
        return {
            "method": chosen["method"],
            **fields,
            "write_outage_seconds": write_outage,
            "read_outage_seconds": 0.0 if reads_elsewhere else down(),
        }

    return _prepared_removed_on_failure(
        config, lambda: _attempt("master", config, before_version, version, refresh, upgrade, recovered, choose)
    )


def _link_release_files(attempt, config: dict) -> None:
    attempt.step("link release files")
    for unfinished in __utils__["sentry_backups.incomplete"](config["serverdir"]):
        shutil.rmtree(unfinished)  # a killed snapshot's (no trail names it, or the upgrade would refuse)
    __utils__["sentry_snapshot.prepare"](config["serverdir"], config["backup_dir"])


def _prepared_removed_on_failure(config: dict, upgrade: Callable[[], dict]) -> dict:
    """An upgrade that fails leaves no links prepared for its snapshot: they would keep release files the
    server deletes meanwhile on disk (links only: nothing is lost)."""
    try:
        return upgrade()
    except Exception:
        shutil.rmtree(__utils__["sentry_snapshot.prepared_path"](config["backup_dir"]), ignore_errors=True)
        raise


def _stop_holding(attempt, config: dict, chosen: dict) -> None:
    """In place: nginx first (the server listens on loopback only, so outside writes end with it); then
    what the server holds in brief (serial, uuid, users and indexes: as long whatever the number of
    release files), which the new version must hold too; then the server."""
    if config["nginx_service"]:
        attempt.mark(nginx_stopped=True)
        _stop_nginx_at_once(config["nginx_service"])
    chosen["at_stop"] = __salt__["sentry_health.brief"](instance=config["program"])
    attempt.mark(stopped=True)
    __salt__["sentry_server.stop"](config["program"])


def _method(config: dict, version: str, method: str, follows: str = "") -> dict:
    return __salt__["sentry_inplace.method"](version, method=method, instance=config["program"], follows=follows)


def _in_place_actions(config: dict, version: str, check: Callable[[], dict]) -> dict:
    """What sentry_inplace's steps do on this host (its ``act``). __utils__ functions are looked up here:
    called back from a _utils module, a lambda sees that loader's dunders, where __utils__ is missing."""
    new_path, take = __utils__["sentry_backups.new_path"], __utils__["sentry_snapshot.take"]
    return {
        "new_path": lambda: new_path(config["serverdir"], "backup"),
        "snapshot": lambda path: take(config["serverdir"], path),
        "install": lambda: _install(config["package"], version, refresh=False),
        "start": lambda: _start(config),
        "check": check,
    }


def _export_import(attempt, config: dict, version: str) -> dict:
    """After the stop: export, move the data aside, install, import, start, health check."""
    attempt.step("export")
    # Copied, not linked: the export, the backup and the new serverdir stay independent of each other.
    exported = __salt__["sentry_data.export"](stop=False, restart=False, instance=config["program"])
    # Read now: the export may change before the import reads it.
    expected = __salt__["sentry_health.export_state"](exported["path"])
    attempt.step("move data aside")
    _move_data_aside(attempt, config)
    attempt.step("install")
    attempt.mark(installed=True)
    _install(config["package"], version, refresh=False)
    attempt.step("import")
    imported = __salt__["sentry_data.import"](exported["path"], stop=False, restart=False, instance=config["program"])
    attempt.step("start server")
    attempt.mark(serve=True)  # the package's sentry-server serves over a trail only when told so
    _start(config)
    attempt.step("health check")
    checked = __salt__["sentry_health.check"](exported["path"], instance=config["program"], expected=expected)
    return {"export": exported, "import": imported, "health": checked}


def _begin(config: dict) -> tuple[dict | None, str]:
    """Before an upgrade: what an interrupted one left put back first; the version installed now."""
    recovered = _recover_first(config)
    installed = __salt__["pkg.version"](config["package"])
    if not installed:
        raise CommandExecutionError(
            f"{config['package']} is not installed: nothing to upgrade (apply the sentry state first)"
        )
    return recovered, installed


def _attempt(
    role: str,
    config: dict,
    before_version: str,
    version: str,
    refresh: bool,
    body: Callable,
    recovered: dict | None,
    choose: Callable[[Any], None] = lambda attempt: None,
) -> dict:
    """The shape master and replica upgrades share: download and ``choose`` the method (while it still
    serves), begin the trail at 'stop', run ``body(attempt, down)`` (``down()``: seconds since the stop),
    roll back on any failure, end the trail, record the result (``body``'s fields beside the common ones)."""
    operation = "upgrade" if role == "master" else "replica upgrade"
    attempt = __utils__["sentry_attempt.new"](operation, config, before_version, version, _journal())
    try:
        if before_version != version:
            attempt.step("download")
            _fetch(config["package"], version, refresh)
        attempt.step("choose method")
        choose(attempt)
        down_at = time.monotonic()
        attempt.step("stop")
        attempt.begin()
        fields = body(attempt, lambda: round(time.monotonic() - down_at, 2))
    except Exception as exc:  # whatever failed, the old server comes back
        rolled_back = _roll_back(attempt.changed, before_version, config, settled=attempt.end)
        raise _give_up(role, version, attempt.steps.current, exc, rolled_back, config) from None
    attempt.end()
    result = {
        "changed": True,
        "role": role,
        "version": {"old": before_version, "new": __salt__["pkg.version"](config["package"])},
        "backup": attempt.changed["backup"],
        **fields,
        "steps": attempt.steps.done(),
        **({"recovered_first": recovered} if recovered else {}),
    }
    _record(result, config)
    return result


def _give_up(
    role: str, version: str, failed_step: str, exc: Exception, rolled_back: str, config: dict
) -> CommandExecutionError:
    """Record a failed, rolled back upgrade; the error to raise, naming its step."""
    _record(
        {"changed": False, "role": role, "failed_step": failed_step, "error": str(exc), "rollback": rolled_back},
        config,
    )
    what = "upgrade" if role == "master" else "replica upgrade"
    return CommandExecutionError(
        f"{what} to {version} failed at step '{failed_step}': {exc}. Rolled back: {rolled_back}"
    )


def _master_url(config: dict) -> str:
    if not config["master_url"]:
        raise CommandExecutionError(f"instance {config['program']} is no replica: it has no server:master_url")
    return config["master_url"]


def wait_synced(timeout: float = 600, instance: str | None = None) -> dict:
    """
    Wait until this replica follows its master and holds every change the
    master had when the wait began; returns the replica's status.

    CLI Example:

    .. code-block:: bash

        salt 'sentry-replica*' sentry_upgrade.wait_synced timeout=300
    """
    config = _settings(instance)
    master_url = _master_url(config)
    master_ = __utils__["sentry_api.master_status"](master_url, config.get("ca_file", ""))
    return __utils__["sentry_api.wait_follows"](_status_reader(config), master_, master_url, timeout)


def replica(
    version: str,
    refresh: bool = True,
    sync_timeout: float = 600,
    reads_elsewhere: bool = False,
    instance: str | None = None,
    method: str = "auto",
) -> dict:
    """
    Bring a replica to package ``version`` and to its (upgraded) master. In
    place when it follows its master as it is now and the new server runs on
    its serverdir (``sentry_inplace.method``): stop it, snapshot the serverdir
    to ``_data-backup-<timestamp>``, install, start on the same serverdir.
    Otherwise (or ``method=export``) remade: stop it, install the version,
    move its data to ``_data-backup-<timestamp>``, initialise a fresh replica
    serverdir and start it. Either returns once it holds everything the
    master holds. A replica at ``version`` that already follows its master
    is left alone.

    On failure what it changed comes back and the error names the step.
    Nothing is deleted. ``read_outage_seconds`` in the result is the time it
    was down, or 0 with ``reads_elsewhere=True`` (it was drained on a front
    meanwhile, as sentry.upgrade does).

    CLI Example:

    .. code-block:: bash

        salt 'sentry-replica*' sentry_upgrade.replica 6.20.3-1
    """
    config = _settings(instance)
    master_url = _master_url(config)
    recovered, before_version = _begin(config)
    master_ = __utils__["sentry_api.master_status"](master_url, config.get("ca_file", ""))
    current = _status(config)
    if before_version == version and current["up"] and __utils__["sentry_api.follows"](current, master_):
        return {"changed": False, "role": "replica", "version": {"old": before_version, "new": version}}
    if before_version != version:
        __salt__["sentry_server.alone"](version, instance=config["program"])
    chosen: dict = {}

    def choose(attempt) -> None:  # a replica checks nothing before: its master did
        following = current["up"] and current.get("master_uuid") == master_.get("uuid")
        follows = "" if following else f"it does not follow {master_url} as it is now (uuid {master_.get('uuid')})"
        if before_version == version:
            chosen.update(method="remake", why=f"at {version} already; {follows or 'it does not answer'}")
        else:
            chosen.update(_method(config, version, method, follows))
        if chosen["method"] == IN_PLACE:
            _link_release_files(attempt, config)
        else:
            _refuse_unmovable(config)

    def upgrade(attempt, down: Callable[[], float]) -> dict:
        attempt.mark(stopped=True)
        __salt__["sentry_server.stop"](config["program"])
        if chosen["method"] == IN_PLACE:
            check = lambda: __salt__["sentry_upgrade.wait_synced"](timeout=sync_timeout, instance=config["program"])  # noqa: E731
            synced = __utils__["sentry_inplace.replica"](attempt, _in_place_actions(config, version, check))["synced"]
        else:
            synced = _remake(attempt, config, version, before_version != version, sync_timeout)
        seconds = down()
        return {
            "method": chosen,
            "serial": synced["serial"],
            "down_seconds": seconds,
            "read_outage_seconds": 0.0 if reads_elsewhere else seconds,
        }

    return _prepared_removed_on_failure(
        config, lambda: _attempt("replica", config, before_version, version, refresh, upgrade, recovered, choose)
    )


def _remake(attempt, config: dict, version: str, install: bool, sync_timeout: float) -> dict:
    """After the stop: install, move the data aside, initialise a fresh replica, start, catch up."""
    attempt.step("install")
    if install:
        attempt.mark(installed=True)
        _install(config["package"], version, refresh=False)
    attempt.step("move data aside")
    _move_data_aside(attempt, config)
    attempt.step("initialise")
    __salt__["sentry_data.initialise"](config["serverdir"], master_url=config["master_url"], user=config["user"])
    attempt.step("start server")
    attempt.mark(serve=True)
    _start(config)
    attempt.step("catch up")
    return wait_synced(timeout=sync_timeout, instance=config["program"])
