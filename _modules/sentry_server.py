"""The sentry instance on this minion: where it lives, whether it answers, starting and stopping it.

Where (serverdir, program, port, ...) comes from what the formula rendered
(``_utils/sentry_settings.py``): ``instance=PROGRAM`` picks one where a host
runs several; otherwise the pillar's, or the only one.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import os
import xmlrpc.client

import salt.utils.data
from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_server"

SERVER_BIN = "/usr/sbin/sentry-server"


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_server: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def settings(instance: str | None = None) -> dict:
    """
    Where the instance lives, as the formula rendered it: program, serverdir,
    user, URL, package, ... (no secrets). ``instance`` names one (its program)
    where a host runs several; the pillar's, or the only one, otherwise.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.settings
        salt '*' sentry_server.settings instance=sentry-b
    """
    pillar_program = salt.utils.data.traverse_dict_and_list(__pillar__, "sentry:server:program", None)
    return __utils__["sentry_settings.load"](instance, pillar_program)


def _base(url: str | None, instance: str | None = None) -> str:
    """``url``, or the instance's own server."""
    return url.rstrip("/") if url else settings(instance)["url"]


def status(url: str | None = None, instance: str | None = None) -> dict:
    """
    What the server says of itself: ``up`` (whether it answered), role
    (master/replica), serial, uuid, and on a replica its master's serial and
    how far behind it is. A server that does not answer gives ``up: False``
    and the ``error`` (and salt-call exits 1).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.status
        salt '*' sentry_server.status url=http://127.0.0.1:3142
    """
    base = _base(url, instance)
    try:
        return __utils__["sentry_api.status"](base)
    except CommandExecutionError as exc:
        __context__["retcode"] = 1  # salt-call exits non-zero, with the report
        return {"up": False, "url": base, "error": str(exc)}


def answers(url: str | None = None, instance: str | None = None) -> bool:
    """
    Whether a server answers its API at ``url`` (default: the instance's) now.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.answers
    """
    return __utils__["sentry_api.server_version"](url.rstrip("/") if url else settings(instance)["url"]) is not None


def version(url: str | None = None, instance: str | None = None) -> dict:
    """
    Versions: the installed sentry package, and the devpi-server answering at
    the instance's URL (None when none answers).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.version
    """
    config = settings(instance)
    server = __utils__["sentry_api.server_version"](url.rstrip("/") if url else config["url"])
    return {"package": __salt__["pkg.version"](config["package"]) or None, "server": server}


def _supervisor(config: dict):
    try:
        return __utils__["sentry_supervisor.connect"](config["supervisor_socket"], wait=10)
    except RuntimeError as exc:
        raise CommandExecutionError(f"{exc}; is supervisor running (state sentry.supervisor)?") from None


def running(instance: str | None = None) -> bool:
    """
    Whether the instance's supervisor program runs (or is starting).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.running
    """
    config = settings(instance)
    try:
        api = _supervisor(config)
    except CommandExecutionError:
        return False  # no supervisor, so nothing of ours runs under it
    return __utils__["sentry_supervisor.is_running"](api, config["program"])


def stop(instance: str | None = None) -> bool:
    """
    Stop the instance's supervisor program and wait until it has exited.
    True when it was running.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.stop
    """
    config = settings(instance)
    api = _supervisor(config)
    was_running = __utils__["sentry_supervisor.is_running"](api, config["program"])
    try:
        __utils__["sentry_supervisor.stop"](api, config["program"])
    except xmlrpc.client.Error as exc:
        raise CommandExecutionError(f"supervisor could not stop {config['program']}: {exc}") from None
    return was_running


def start(instance: str | None = None, timeout: float | None = None, settled: bool = False) -> dict:
    """
    Start the instance's supervisor program; its status() once it answers
    (within ``timeout`` seconds, default supervisor:ready_timeout). A program
    that dies meanwhile fails at once with its last output. With ``settled``,
    also wait until supervisor calls it RUNNING (its startsecs have passed), so
    that a state run right after finds nothing to do.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.start
    """
    config = settings(instance)
    api, program = _supervisor(config), config["program"]
    try:
        __utils__["sentry_supervisor.start"](api, program, wait=False)
    except xmlrpc.client.Error as exc:
        raise CommandExecutionError(f"supervisor could not start {program}: {exc}") from None
    status_of = __utils__["sentry_api.status"]  # looked up here: inside a util, __utils__ is not there
    timeout = timeout or config["ready_timeout"]
    status = __utils__["sentry_supervisor.wait_until_answers"](api, program, lambda: status_of(config["url"]), timeout)
    if settled:
        __utils__["sentry_supervisor.wait_until_running"](api, program, timeout)
    return status


def _sharing_and_running(config: dict) -> list[str]:
    """The other instances on this host deployed from the same package whose program runs."""
    return [
        name
        for name in __utils__["sentry_settings.deployed"]()
        if name != config["program"] and settings(name)["package"] == config["package"] and running(name)
    ]


def alone(version: str, instance: str | None = None) -> None:
    """
    Raise unless the instance may have its package replaced by ``version``:
    instances of one host share the package, so installing it for one
    replaces the binaries of all; refused while another one runs from it
    (its data would meet the new version unprepared). Returns None.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_server.alone 6.20.3-1 instance=sentry-b
    """
    config = settings(instance)
    others = _sharing_and_running(config)
    if others:
        raise CommandExecutionError(
            f"nothing was changed: {', '.join(others)} on this host run(s) from package {config['package']} too, "
            f"which the upgrade of {config['program']} to {version} would replace under it. Upgrade one instance "
            "at a time with the others stopped: export a master first ('sentry_data.export instance=NAME "
            "restart=False') and import that export after ('sentry_data.import EXPORT move_aside=True "
            "instance=NAME', then 'sentry_server.start instance=NAME'); remake a replica after "
            f"('sentry_upgrade.replica {version} instance=NAME')"
        )
