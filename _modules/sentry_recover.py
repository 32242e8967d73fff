"""Mend a sentry instance after an import or upgrade died half-way (kill -9, OOM, reboot).

An import or an upgrade keeps a trail beside the serverdir
(``<serverdir>.operation.json``, ``_utils/sentry_journal.py``) written before
every change. From it, ``recover`` puts the package version and the data back
(or completes an upgrade that had passed its health check) and starts what
the operation had stopped. Nothing is deleted: what stood in the way goes to
``_data-failed-<timestamp>``. ``instance=PROGRAM`` picks the instance where a
host runs several.

The package's ``sentry-server``, the formula's guard and ``sentry_upgrade``
tell operators to run ``sentry_data.recover``: that name hands over to this
module.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import os
import shutil

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_recover"

SERVER_BIN = "/usr/sbin/sentry-server"


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_recover: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def recover(instance: str | None = None) -> dict:
    """
    Undo what an interrupted import or upgrade (kill -9, OOM, reboot) left,
    from the trail it kept beside the serverdir (``<serverdir>.operation.json``):
    the data it moved aside comes back (what stood in its place goes to
    ``_data-failed-<timestamp>``), the package version it started from is
    reinstalled, the server and nginx are started again. An upgrade that had
    passed its health check is completed instead. No data is deleted: only
    unfinished snapshots (links and copies of the serverdir), also without a
    trail. Also answers as ``sentry_data.recover``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_recover.recover
        salt '*' sentry_recover.recover instance=sentry-b
    """
    config = __salt__["sentry_server.settings"](instance)
    serverdir, program = config["serverdir"], config["program"]
    journal = __utils__["sentry_journal.read"](serverdir)
    if journal is None:
        removed = _remove_unfinished_snapshots(serverdir)
        return {"recovered": False, "comment": f"no interrupted operation on {serverdir}", "done": removed}
    if journal.get("unreadable"):  # never discarded: it is the only pointer to where the data went
        raise CommandExecutionError(f"{serverdir}: {__utils__['sentry_journal.describe'](journal)}")
    if __utils__["sentry_journal.alive"](journal):
        raise CommandExecutionError(f"{serverdir}: the {journal['operation']} is still running (pid {journal['pid']})")
    done = []
    if __salt__["sentry_server.running"](program):
        __salt__["sentry_server.stop"](program)  # it may serve what the operation left half made
        done.append(f"{program} stopped")
    completing = bool(journal.get("healthy"))
    if not completing:
        done += _put_back_package(journal, config["package"])
        done += _put_back_data(journal, serverdir)
    __utils__["sentry_journal.end"](serverdir)
    if completing or journal.get("was_running", True):
        __salt__["sentry_server.start"](program)
        done.append(f"{program} running")
    if journal.get("nginx_stopped"):
        __salt__["sentry_service.start"](config["nginx_service"])
        done.append(f"{config['nginx_service']} running")
    return {
        "recovered": True,
        "operation": journal.get("operation"),
        "step": journal.get("step"),
        "completed" if completing else "rolled_back": True,
        "done": done,
    }


def _dpkg_state(package: str) -> tuple[str, str]:
    """('installed', version) when dpkg holds ``package`` complete; else its state (half-installed, ...)."""
    result = __salt__["cmd.run_all"](
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
        python_shell=False,
        output_loglevel="quiet",
        ignore_retcode=True,
    )
    status, _, version = result["stdout"].partition("\t")
    want, flag, state = ([*status.split(), "", "", ""])[:3]  # e.g. install reinstreq half-installed
    if result["retcode"] != 0 or not state:
        return "not-installed", ""
    if want in ("install", "hold") and flag == "ok" and state == "installed":
        return "installed", version
    return status.strip(), version


def _put_back_package(journal: dict, package: str) -> list[str]:
    """The package version the interrupted operation started from, if it had begun installing; what was done."""
    version = journal.get("version_before")
    if not (journal.get("installed") and version):
        return []
    # An interrupted dpkg must finish before anything else is installed.
    __salt__["cmd.run_all"](["dpkg", "--configure", "-a"], python_shell=False, output_loglevel="quiet")
    # Killed while unpacking, dpkg leaves the package 'half-installed' (a mix of both versions' files)
    # under the version it started from, which pkg.version counts as installed: ask dpkg itself.
    if _dpkg_state(package) == ("installed", version):
        return []
    # apt-get itself, with --reinstall: killed in a maintainer script (prerm, postinst), dpkg marks the
    # package 'reinstreq' and refuses to configure it, and Salt's pkg.install, which lists no such package
    # as installed, would ask apt for a plain install ("already the newest version") and fail the same way.
    __salt__["cmd.run_all"](
        ["apt-get", "install", "-y", "-q", "--reinstall", "--allow-downgrades", f"{package}={version}"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        python_shell=False,
        output_loglevel="quiet",
        ignore_retcode=True,
    )
    status, now = _dpkg_state(package)
    if (status, now) != ("installed", version):
        raise CommandExecutionError(
            f"{package} {version} could not be reinstalled (dpkg says {status} {now or 'nothing'}); "
            f"run 'apt-get install --reinstall --allow-downgrades {package}={version}', "
            f"then 'salt-call sentry_data.recover' again"
        )
    return [f"{package} {version} reinstalled"]


def _put_back_data(journal: dict, serverdir: str) -> list[str]:
    """The data the interrupted operation moved aside, back in ``serverdir``; what was done."""
    done = []
    backup = journal.get("backup")
    if backup and os.path.isdir(backup):
        failed = __utils__["sentry_backups.put_back"](serverdir, backup)
        done.append(f"the data is back in {serverdir}" + (f"; what stood there is in {failed}" if failed else ""))
    # A killed import leaves what it had written in its scratch dir, hidden beside the serverdir: kept where
    # sentry_data.backups shows it, as a failed attempt, and out of the way of the next one.
    for scratch in __utils__["sentry_backups.import_scratch"](serverdir):
        failed = __utils__["sentry_backups.new_path"](serverdir, "failed")
        os.rename(scratch, failed)
        done.append(f"what the interrupted {journal.get('operation', 'operation')} had written is in {failed}")
    return done + _remove_unfinished_snapshots(serverdir)


def _remove_unfinished_snapshots(serverdir: str) -> list[str]:
    """A killed in-place upgrade leaves the snapshot it was making: links to and copies of the serverdir,
    which hold nothing the serverdir does not, but keep deleted release files on disk. Removed."""
    done = []
    for unfinished in __utils__["sentry_backups.incomplete"](serverdir):
        shutil.rmtree(unfinished)
        done.append(f"the unfinished snapshot {unfinished} is removed (links and copies of {serverdir})")
    return done
