"""Whether a sentry server holds what an export holds: the upgrade's health check, and devpi-fsck.

``check`` compares the server's JSON API with an export's ``dataindex.json``
(users and their settings, indexes and their settings, projects, versions,
every release file with its hash; the comparison itself is
``_utils/sentry_compare.py``) and runs ``fsck`` (devpi's own check of every
file on disk against its checksum). ``sentry_upgrade.master`` runs it after
its import and rolls back on any difference; operators run it after an
import by hand. The instance (URL, serverdir, user) is the one the formula
rendered (``sentry_server.settings``).

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import time
import urllib.parse
from collections.abc import Callable

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_health"

SERVER_BIN = "/usr/sbin/sentry-server"
VENV_BIN = "/opt/virtualenvs/sentry/bin"
PAGE_FETCHERS = 8  # project pages fetched at once (devpi-server answers with 50 threads)


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_health: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _settings(instance: str | None) -> dict:
    return __salt__["sentry_server.settings"](instance)


def export_state(export_path: str) -> dict:
    """
    What the export at ``export_path`` holds, as ``check`` compares it: users
    with their settings (no secrets), indexes with their settings, and per
    index that holds uploads its projects with their versions and its release
    files with their version and hashes.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_health.export_state /var/lib/sentry/export-20260101-120000
    """
    return __utils__["sentry_compare.expected"](__salt__["sentry_data.read_export"](export_path), export_path)


def _server_state(base: str, wanted_state: dict) -> dict:
    """What the server at ``base`` holds, in sentry_compare's shape: one request per index and per project."""
    fetch = __utils__["sentry_api.get"]  # looked up here: Salt's dunders are empty in the pool's threads

    def get(path: str, query: str = "") -> dict:
        return fetch(f"{base}/{urllib.parse.quote(path)}{query}", f"GET {base}/{path}{query}")

    root = get("")
    indexes = __utils__["sentry_compare.stage_indexes"](wanted_state, root)
    listings = {index: get(index) for index in indexes}
    pages = [(index, project) for index in indexes for project in listings[index].get("projects", [])]
    with concurrent.futures.ThreadPoolExecutor(PAGE_FETCHERS) as pool:
        # ignore_bases: the index's own versions, not those its bases add
        answers = list(pool.map(lambda page: get(f"{page[0]}/{page[1]}", "?ignore_bases"), pages))
    return __utils__["sentry_compare.actual"](root, listings, dict(zip(pages, answers, strict=True)))


def server_state(url: str | None = None, instance: str | None = None) -> dict:
    """
    What the instance's server (or the one at ``url``) holds now, in the
    shape ``check`` compares: users and indexes with their settings, and per
    index that holds uploads its projects, versions and release files with
    their hashes. An in-place upgrade reads it before the stop and checks
    the server against it after (``check(expected=...)``).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_health.server_state
    """
    base = (url or _settings(instance)["url"]).rstrip("/")
    root = __utils__["sentry_api.get"](f"{base}/", f"GET {base}/")
    every_index = [f"{user}/{index}" for user, info in root.items() for index in info.get("indexes", {})]
    return _server_state(base, {"projects": {index: {} for index in every_index}})


def brief(url: str | None = None, instance: str | None = None) -> dict:
    """
    What the instance's server (or the one at ``url``) holds, in brief: its
    serial and uuid, and its users and indexes with their settings (GET /),
    two requests whatever the number of release files. An in-place upgrade
    reads it once writes have stopped and checks the new version against it
    (``check_brief``).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_health.brief
    """
    base = (url or _settings(instance)["url"]).rstrip("/")
    status = __utils__["sentry_api.status"](base)
    root = __utils__["sentry_api.get"](f"{base}/", f"GET {base}/")
    return {"serial": status.get("serial"), "uuid": status.get("uuid"), "root": root}


def check_brief(expected: dict, url: str | None = None, instance: str | None = None) -> dict:
    """
    Check the server against ``brief`` as read before: the same serial and
    uuid (every change it had, and no other), the same users and indexes
    with their settings. Returns what was checked and the seconds; raises
    naming each difference.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_health.check_brief '{"serial": 41, "uuid": "...", "root": {...}}'
    """
    started = time.monotonic()
    now = brief(url, instance)
    found = __utils__["sentry_compare.brief_differences"](expected, now)
    if found:
        raise CommandExecutionError(f"health check failed: {__utils__['sentry_compare.summary'](found)}")
    users = now["root"]
    return {
        "serial": now["serial"],
        "users": len(users),
        "indexes": sum(len(info.get("indexes", {})) for info in users.values()),
        "seconds": round(time.monotonic() - started, 2),
    }


def check(
    export_path: str | None,
    url: str | None = None,
    serverdir: str | None = None,
    instance: str | None = None,
    expected: dict | None = None,
) -> dict:
    """
    Check that the instance's server holds exactly what the export at
    ``export_path`` holds, as the upgrade does after its import (and useful
    after an import by hand): the same users with the same settings (secrets
    aside), the same indexes with the same settings, every project and
    version, and every release file (index, project, version, name) listed
    with the hash it was exported with; and ``fsck`` finds every file on
    disk with its checksum. ``url`` and ``serverdir`` check another server
    than the instance's (say one started on a scratch import). ``expected``
    is the export as read earlier (``export_state``): the upgrade
    reads it right after exporting, so that a change to the export later
    cannot hide; an in-place upgrade passes ``export_path=None`` and the
    ``server_state`` it read before its stop.

    Returns what was checked (users, indexes, projects, files; the files fsck
    checked) and the seconds taken; raises naming each difference ("user bob
    is missing", "index alice/dev: volatile is True, exported False",
    "alice/dev: pkg-1.0-py3-none-any.whl has sha256 ... on the server, ... in
    the export").

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_health.check /var/lib/sentry/export-20260101-120000
    """
    started, config = time.monotonic(), _settings(instance)
    base = (url or config["url"]).rstrip("/")
    if expected is None and not export_path:
        raise CommandExecutionError("sentry_health.check needs an export_path, or the expected state")
    wanted_state = expected if expected is not None else export_state(export_path)
    problems, fscked = [], {"files": None, "seconds": None}
    # devpi-fsck reads the disk, the comparison waits on the server: side by side, the check takes
    # the longer of the two, not their sum (it lies in an upgrade's write window).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        checking = pool.submit(_fsck_checker(serverdir, config))
        problems += __utils__["sentry_compare.differences"](wanted_state, _server_state(base, wanted_state))
        try:
            fscked = checking.result()
        except CommandExecutionError as exc:
            problems.insert(0, str(exc))
    if problems:
        raise CommandExecutionError(
            f"{base} does not hold what {f'{export_path} holds' if export_path else 'it held before'}: "
            f"{__utils__['sentry_compare.summary'](problems)}"
        )
    return {
        **__utils__["sentry_compare.counts"](wanted_state),
        "fsck_files": fscked["files"],
        "fsck_seconds": fscked["seconds"],
        "seconds": round(time.monotonic() - started, 2),
    }


def _run_fsck(run: Callable[..., dict], user: str, serverdir: str) -> dict:
    """``sentry-server --fsck`` as ``user`` (``run``: cmd.run_all); devpi-fsck itself where the package's
    sentry-server predates --fsck."""
    options = {"python_shell": False, "output_loglevel": "quiet", "ignore_retcode": True}
    result = run(["runuser", "-u", user, "--", SERVER_BIN, "--fsck", "--serverdir", serverdir], **options)
    if result["retcode"] == 2 and "--fsck" in result["stderr"]:
        fsck_bin = os.path.join(VENV_BIN, "devpi-fsck")
        result = run(["runuser", "-u", user, "--", fsck_bin, "--serverdir", serverdir], **options)
    return result


def _fsck_checker(serverdir: str | None, config: dict) -> Callable[[], dict]:
    """``fsck`` of ``serverdir`` (default the instance's) as a call for another thread: Salt's dunders
    are empty there, so what it calls is looked up here."""
    serverdir = serverdir or config["serverdir"]
    initialised = __salt__["sentry_data.is_initialised"](serverdir)
    run, errors_in = __salt__["cmd.run_all"], __utils__["sentry_compare.fsck_errors"]

    def check() -> dict:
        started = time.monotonic()
        if not initialised:
            raise CommandExecutionError(f"{serverdir} holds no initialised server: nothing to check")
        return _fsck_result(serverdir, _run_fsck(run, config["user"], serverdir), errors_in, started)

    return check


def fsck(serverdir: str | None = None, instance: str | None = None) -> dict:
    """
    devpi's own consistency check (devpi-fsck) of the instance's serverdir, or
    ``serverdir``, as the service user: every file the database lists is on
    disk with the checksum it was stored with. It only reads, so the server
    may run meanwhile. Returns the files checked and the seconds; raises
    naming each missing or damaged file.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_health.fsck
        salt '*' sentry_health.fsck serverdir=/var/lib/sentry/imported
    """
    return _fsck_checker(serverdir, _settings(instance))()


def _fsck_result(serverdir: str, result: dict, errors_in: Callable[[str], list[str]], started: float) -> dict:
    output = f"{result['stdout']}\n{result['stderr']}"
    if result["retcode"] != 0:
        errors = errors_in(output) or output.strip().splitlines()[-1:] or ["no output"]
        raise CommandExecutionError(f"devpi-fsck of {serverdir} failed: {'; '.join(errors)}")
    checked = re.search(r"Finished with a total of (\d+) files", output)
    return {
        "serverdir": serverdir,
        "files": int(checked.group(1)) if checked else None,
        "seconds": round(time.monotonic() - started, 2),
    }
