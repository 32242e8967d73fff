"""Keep a service (supervisor, nginx) running on every kind of Debian host.

``service.running`` for hosts with or without a running systemd: the work is
done by ``_modules/sentry_service.py``, which picks systemd or Debian's init
scripts at run time. A watched change reloads (``reload: true``) or restarts
the service, unless this run has just started it.

.. code-block:: yaml

    sentry-nginx-service:
      sentry_service.running:
        - name: nginx
        - reload: true
        - watch:
          - file: sentry-nginx-site-file
"""

from __future__ import annotations

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_service"

STARTED = "sentry_service.started"  # services this run started: a watch needs no reload then


def __virtual__():
    if "sentry_service.status" not in __salt__:
        return (False, "sentry_service: the sentry_service execution module is not available (saltutil.sync_all)")
    return __virtualname__


def _started_now(name: str) -> None:
    __context__[STARTED] = __context__.get(STARTED, set()) | {name}


def running(name: str, enable: bool = True, reload: bool = False, **kwargs) -> dict:
    """
    Ensure the service ``name`` runs now and, with ``enable``, at boot.

    name
        The service (init script or unit) name, e.g. ``nginx``.
    enable
        Also have it start at boot.
    reload
        On a watched change, reload instead of restarting.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        init = __salt__["sentry_service.init_system"]()
        is_running = __salt__["sentry_service.status"](name)
        is_enabled = __salt__["sentry_service.enabled"](name) if enable else True
    except CommandExecutionError as exc:
        if __opts__["test"]:
            # Its package may not be installed yet: that is a change to come.
            return {**ret, "result": None, "changes": {name: "started"}, "comment": f"{name} would be started ({exc})"}
        return {**ret, "result": False, "comment": str(exc)}

    if not is_running:
        ret["changes"]["running"] = {"old": False, "new": True}
    if not is_enabled:
        ret["changes"]["enabled"] = {"old": False, "new": True}
    if not ret["changes"]:
        ret["comment"] = f"{name} is running ({init})"
        return ret
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be {', '.join(ret['changes'])} ({init})"}

    try:
        if not is_enabled:
            __salt__["sentry_service.enable"](name)
        if not is_running:
            __salt__["sentry_service.start"](name)
            _started_now(name)
            if not __salt__["sentry_service.status"](name):
                return {**ret, "result": False, "comment": f"{name} was started ({init}) but does not run"}
    except CommandExecutionError as exc:
        return {**ret, "result": False, "comment": str(exc)}
    ret["comment"] = f"{name} {' and '.join(ret['changes'])} ({init})"
    return ret


def mod_watch(name: str, sfun: str | None = None, reload: bool = False, **kwargs) -> dict:
    """Reload or restart ``name`` because a watched state changed; nothing when this run started it."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    action = "reload" if reload else "restart"
    if name in __context__.get(STARTED, set()):
        ret["comment"] = f"{name} was started in this run: nothing to {action}"
        return ret
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would {action}"}
    try:
        if reload and __salt__["sentry_service.status"](name):
            __salt__["sentry_service.reload"](name)
        else:
            action = "restart"
            __salt__["sentry_service.restart"](name)
            _started_now(name)
    except CommandExecutionError as exc:
        return {**ret, "result": False, "comment": str(exc)}
    ret["changes"][action] = True
    ret["comment"] = f"{name}: {action} done"
    return ret
