"""Keep a supervisor program running, restarting it only when something it reads changed.

Salt's own supervisord state left the core; this is the part the formula needs.
It speaks supervisor's XML-RPC API on its unix socket through
``_utils/sentry_supervisor.py`` (no supervisorctl processes, no parsing).

.. code-block:: yaml

    sentry-supervisor-program-running:
      sentry_program.running:
        - name: sentry-server
        - conf_file: /etc/supervisor/conf.d/sentry-server.conf
        - ready_url: http://127.0.0.1:3141/+api
        - watch:
          - file: sentry-supervisor-program-file
          - pkg: sentry-package-installed

A changed program file is applied like ``supervisorctl update NAME`` (which
restarts the program once); a watched state with changes restarts it, unless
this run already did. A dry run (``test=True``) changes nothing, not even
what supervisor has read.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import xmlrpc.client

__virtualname__ = "sentry_program"

DEFAULT_SOCKET = "/var/run/supervisor.sock"
RESTARTED = "sentry_program.restarted"


def __virtual__():
    return __virtualname__


def _connect(path: str, wait: float):
    return __utils__["sentry_supervisor.connect"](path, wait=wait)


def _state(api, name: str) -> str:
    return __utils__["sentry_supervisor.state"](api, name)


def _running(api, name: str) -> bool:
    return __utils__["sentry_supervisor.is_running"](api, name)


def _pending_config(api, name: str) -> str | None:
    """'added' or 'changed' when supervisor has not loaded the program file as it is now (it re-reads its files)."""
    [[added, changed, _removed]] = api.reloadConfig()
    if name in added:
        return "added"
    if name in changed:
        return "changed"
    return None


def _pending_config_unread(api, name: str, conf_file: str) -> str | None:
    """What _pending_config would say, without reloadConfig, for a dry run: reloadConfig has
    supervisor re-read all its files and keep what it found (getAllConfigInfo and `supervisorctl
    avail` show it), a change a dry run must not make.

    Supervisor reads a program's file when it adds the program, and starts it right then: a file
    written after the program's last start is one it has not loaded (file.managed writes a file
    only to change it). Start times come in whole seconds.
    """
    if _state(api, name) == "ABSENT":
        return "added"
    try:
        written = int(os.path.getmtime(conf_file))
    except FileNotFoundError:
        return None  # the file state would write it; a change then restarts the program through the watch
    return "changed" if written > api.getProcessInfo(name)["start"] else None


def _plan_start(name: str) -> None:
    """Record that a dry run would (re)start ``name``: sentry_user and sentry_index read it."""
    __utils__["sentry_state.plan_start"](__context__, name)


def _apply_config(api, name: str, pending: str) -> None:
    """What 'supervisorctl update NAME' does for one program: (re)load its group, which starts it."""
    if pending == "changed":
        if _running(api, name):
            api.stopProcessGroup(name)
        api.removeProcessGroup(name)
    api.addProcessGroup(name)


def _restart(api, name: str) -> None:
    if _running(api, name):
        api.stopProcess(name)
    api.startProcess(name)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - an http URL from the formula
            return response.status < 500
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_ready(api, name: str, url: str | None, timeout: float) -> str | None:
    """None once the program is RUNNING (and ``url`` answers), else what went wrong."""
    deadline = time.monotonic() + timeout
    state = _state(api, name)
    while time.monotonic() < deadline and state != "FATAL":
        if state == "RUNNING" and (url is None or _answers(url)):
            return None
        time.sleep(0.3)
        state = _state(api, name)
    tail = __utils__["sentry_supervisor.tail"](api, name)
    return f"{name} is {state}, not ready within {timeout}s; last output:\n{tail}"


def running(
    name: str,
    conf_file: str,
    ready_url: str | None = None,
    ready_timeout: float = 120,
    socket_path: str = DEFAULT_SOCKET,
) -> dict:
    """
    Ensure the supervisor program ``name`` is loaded as its file says and RUNNING.

    name
        The program name (``[program:NAME]``).
    conf_file
        The program's file, which a dry run compares with what supervisor runs.
    ready_url
        An http URL that must answer (status below 500) before the state succeeds.
    ready_timeout
        Seconds to wait for RUNNING and ``ready_url``.
    socket_path
        supervisord's unix socket.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        # In test mode supervisor may not even be installed yet: ask once, never wait.
        api = _connect(socket_path, wait=0 if __opts__["test"] else 30)
        pending = _pending_config_unread(api, name, conf_file) if __opts__["test"] else _pending_config(api, name)
        state = _state(api, name)
    except (RuntimeError, xmlrpc.client.Error) as exc:
        if __opts__["test"]:
            _plan_start(name)
            return {
                **ret,
                "result": None,
                "changes": {"state": {"old": "ABSENT", "new": "RUNNING"}},
                "comment": f"{name} would be added and started (supervisor is not running yet)",
            }
        return {**ret, "result": False, "comment": str(exc)}

    if state == "STARTING" and not pending:
        # Started a moment ago by someone else (supervisord's autostart, an import): let it finish; only if it
        # fails is it this state's to start.
        if __opts__["test"] or _wait_until_ready(api, name, ready_url, ready_timeout) is None:
            return {**ret, "comment": f"{name} was starting and runs with its current configuration"}
        state = _state(api, name)
    if pending:
        ret["changes"]["config"] = pending
    if state != "RUNNING":
        ret["changes"]["state"] = {"old": state, "new": "RUNNING"}
    if not ret["changes"]:
        ret["comment"] = f"{name} is running with its current configuration"
        return ret
    if __opts__["test"]:
        _plan_start(name)
        return {**ret, "result": None, "comment": f"{name} would be {'updated' if pending else 'started'}"}

    try:
        if pending:
            _apply_config(api, name, pending)
            __context__[RESTARTED] = __context__.get(RESTARTED, set()) | {name}
        elif state != "RUNNING":
            # A supervisord started a moment ago may be starting it already (autostart).
            __utils__["sentry_supervisor.start"](api, name, wait=False)
        problem = _wait_until_ready(api, name, ready_url, ready_timeout)
    except xmlrpc.client.Error as exc:
        return {**ret, "result": False, "comment": f"supervisor refused to start {name}: {exc}"}
    if problem:
        return {**ret, "result": False, "comment": problem}
    ret["comment"] = f"{name} {'updated' if pending else 'started'} and ready"
    return ret


def mod_watch(
    name: str, ready_url: str | None = None, ready_timeout: float = 120, socket_path: str = DEFAULT_SOCKET, **kwargs
) -> dict:
    """Restart ``name`` because a watched state changed (once per run)."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if name in __context__.get(RESTARTED, set()):
        ret["comment"] = f"{name} was already restarted in this run"
        return ret
    if __opts__["test"]:
        _plan_start(name)
        return {**ret, "result": None, "comment": f"{name} would be restarted"}
    try:
        api = _connect(socket_path, wait=30)
        _restart(api, name)
        problem = _wait_until_ready(api, name, ready_url, ready_timeout)
    except (RuntimeError, xmlrpc.client.Error) as exc:
        return {**ret, "result": False, "comment": f"restarting {name} failed: {exc}"}
    __context__[RESTARTED] = __context__.get(RESTARTED, set()) | {name}
    if problem:
        return {**ret, "result": False, "comment": problem}
    ret["changes"]["restarted"] = True
    ret["comment"] = f"{name} restarted and ready"
    return ret


def absent(name: str, conf_file: str, socket_path: str = DEFAULT_SOCKET) -> dict:
    """
    Ensure supervisor no longer runs or knows the program ``name`` and its file ``conf_file`` is gone.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{name} is absent"}
    try:
        api = _connect(socket_path, wait=0) if os.path.exists(socket_path) else None
        state = _state(api, name) if api else "ABSENT"
    except (RuntimeError, xmlrpc.client.Error):
        api, state = None, "ABSENT"
    if state != "ABSENT":
        ret["changes"]["state"] = {"old": state, "new": "ABSENT"}
    if os.path.exists(conf_file):
        ret["changes"]["file"] = {"old": conf_file, "new": None}
    if not ret["changes"]:
        return ret
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be stopped and removed"}
    try:
        if api and state != "ABSENT":
            if _running(api, name):
                api.stopProcessGroup(name)
            api.removeProcessGroup(name)
        if os.path.exists(conf_file):
            os.remove(conf_file)
        if api:
            api.reloadConfig()
    except (OSError, xmlrpc.client.Error) as exc:
        return {**ret, "changes": {}, "result": False, "comment": f"removing {name} failed: {exc}"}
    ret["comment"] = f"{name} stopped and removed"
    return ret
