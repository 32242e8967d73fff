"""What the sentry_user and sentry_index states share: the failure and the absent pattern.

Reached from the state modules as ``__utils__["sentry_state.failed"]`` and
``__utils__["sentry_state.absent"]``.
"""

from __future__ import annotations

from collections.abc import Callable

from salt.exceptions import CommandExecutionError


def failed(ret: dict, exc: Exception, test: bool) -> dict:
    """The state's return for ``exc``; in test mode on a host still being deployed
    (no package, no server yet) the change is only planned."""
    if test:
        return {**ret, "result": None, "comment": f"{ret['name']} would be set up once sentry runs ({exc})"}
    if isinstance(exc, KeyError):
        exc = f"the sentry_admin module is not available (is the sentry package installed?): {exc}"
    return {**ret, "changes": {}, "result": False, "comment": str(exc)}


def absent(kind: str, name: str, get: Callable[[], dict | None], delete: Callable[[], object], test: bool) -> dict:
    """Ensure the ``kind`` (user, index) ``name`` is gone: ``get`` reads it, ``delete`` removes it."""
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{kind} {name} does not exist"}
    try:
        if get() is None:
            return ret
        ret["changes"] = {kind: {"old": name, "new": None}}
        if test:
            return {**ret, "result": None, "comment": f"{kind} {name} would be deleted"}
        delete()
    except (CommandExecutionError, KeyError) as exc:
        return failed(ret, exc, test)
    ret["comment"] = f"{kind} {name} deleted"
    return ret
