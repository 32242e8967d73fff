"""Keep a supervisor program running, restarting it only when something it reads changed.

Salt's own supervisord state left the core; this is the part the formula needs,
on top of the core ``supervisord`` execution module.

.. code-block:: yaml

    sentry-supervisor-program-running:
      sentry_program.running:
        - name: sentry-server
        - ready_url: http://127.0.0.1:3141/+api
        - watch:
          - pkg: sentry-package-installed

A changed program file (``supervisorctl reread`` lists it) is applied with
``supervisorctl update NAME``, which restarts the program once; a watched state
with changes restarts it, unless this run already did.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from salt.exceptions import CommandNotFoundError

__virtualname__ = "sentry_program"

RESTARTED = "sentry_program.restarted"


def __virtual__():
    if "supervisord.status" not in __salt__:
        return (False, "sentry_program: the supervisord execution module is not available")
    return __virtualname__


def _pending_config(name: str) -> str | None:
    """'added' or 'changed' when supervisor has not loaded the program file as it is now."""
    output = __salt__["supervisord.reread"]()
    for line in output.splitlines():
        program, _, what = line.partition(":")
        if program.strip() == name and what.strip() in ("available", "changed"):
            return "added" if what.strip() == "available" else "changed"
    if output.startswith("ERROR"):
        raise RuntimeError(f"supervisorctl reread failed: {output}")
    return None


def _state(name: str) -> str:
    # All programs: asking for an unknown one by name makes supervisorctl (and Salt's log) cry ERROR.
    status = __salt__["supervisord.status"]()
    return status.get(name, {}).get("state", "ABSENT")


def _wait_for_supervisor(timeout: float = 30) -> None:
    """supervisord's socket appears a moment after its init script returns."""
    deadline = time.monotonic() + timeout
    while True:
        output = __salt__["supervisord.custom"]("pid")
        if output.strip().isdigit():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"supervisord does not answer on its socket: {output}")
        time.sleep(0.5)


def _wait_until_ready(name: str, url: str | None, timeout: float) -> str | None:
    """None once the program is RUNNING (and ``url`` answers), else what went wrong."""
    deadline = time.monotonic() + timeout
    state = _state(name)
    while time.monotonic() < deadline and state != "FATAL":
        if state == "RUNNING" and (url is None or _answers(url)):
            return None
        time.sleep(0.5)
        state = _state(name)
    tail = __salt__["supervisord.custom"](f"tail {name}")
    return f"{name} is {state}, not ready within {timeout}s; last output:\n{tail[-2000:]}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - an http URL from the formula
            return response.status < 500
    except (urllib.error.URLError, OSError):
        return False


def running(name: str, ready_url: str | None = None, ready_timeout: float = 120) -> dict:
    """
    Ensure the supervisor program ``name`` is loaded as its file says and RUNNING.

    name
        The program name (``[program:NAME]``).
    ready_url
        An http URL that must answer (status below 500) before the state succeeds.
    ready_timeout
        Seconds to wait for RUNNING and ``ready_url``.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        try:
            pending = _pending_config(name)
        except RuntimeError:
            # Just started by its init script, or (test mode) not even installed yet.
            _wait_for_supervisor(timeout=0 if __opts__["test"] else 30)
            pending = _pending_config(name)
        state = _state(name)
    except (RuntimeError, CommandNotFoundError) as exc:
        if __opts__["test"]:
            return {
                **ret,
                "result": None,
                "changes": {"state": {"old": "ABSENT", "new": "RUNNING"}},
                "comment": f"{name} would be added and started (supervisor is not running yet)",
            }
        return {**ret, "result": False, "comment": str(exc)}

    if pending:
        ret["changes"]["config"] = pending
    if state != "RUNNING":
        ret["changes"]["state"] = {"old": state, "new": "RUNNING"}
    if not ret["changes"]:
        ret["comment"] = f"{name} is running with its current configuration"
        return ret
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be {'updated' if pending else 'started'}"}

    if pending:
        output = __salt__["supervisord.update"](name=name)
        __context__[RESTARTED] = __context__.get(RESTARTED, set()) | {name}
    elif state != "RUNNING":
        output = __salt__["supervisord.start"](name)
    if "ERROR" in output:
        return {**ret, "result": False, "comment": f"supervisorctl failed for {name}: {output}"}
    problem = _wait_until_ready(name, ready_url, ready_timeout)
    if problem:
        return {**ret, "result": False, "comment": problem}
    ret["comment"] = f"{name} {'updated' if pending else 'started'} and ready"
    return ret


def mod_watch(name: str, ready_url: str | None = None, ready_timeout: float = 120, **kwargs) -> dict:
    """Restart ``name`` because a watched state changed (once per run)."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if name in __context__.get(RESTARTED, set()):
        ret["comment"] = f"{name} was already restarted in this run"
        return ret
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be restarted"}
    output = __salt__["supervisord.restart"](name)
    if "ERROR" in output:
        return {**ret, "result": False, "comment": f"supervisorctl restart {name} failed: {output}"}
    __context__[RESTARTED] = __context__.get(RESTARTED, set()) | {name}
    problem = _wait_until_ready(name, ready_url, ready_timeout)
    if problem:
        return {**ret, "result": False, "comment": problem}
    ret["changes"]["restarted"] = True
    ret["comment"] = f"{name} restarted and ready"
    return ret


def dead(name: str) -> dict:
    """Ensure the supervisor program ``name`` is not running (stopped, or unknown to supervisor)."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if not __salt__["cmd.which_bin"](["supervisorctl"]):
        ret["comment"] = "supervisor is not installed"
        return ret
    state = _state(name)
    if state not in ("RUNNING", "STARTING", "BACKOFF"):
        ret["comment"] = f"{name} is not running ({state})"
        return ret
    ret["changes"]["state"] = {"old": state, "new": "STOPPED"}
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be stopped"}
    output = __salt__["supervisord.stop"](name)
    if "ERROR" in output:
        return {**ret, "result": False, "comment": f"supervisorctl stop {name} failed: {output}"}
    ret["comment"] = f"{name} stopped"
    return ret
