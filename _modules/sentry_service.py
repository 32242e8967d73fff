"""Start, stop and reload the services sentry needs, on every kind of Debian host.

Salt's ``service`` module serves a host booted with systemd. Where systemd is
installed but not running (containers, chroots, CI runners) it runs in
"offline mode" and starts nothing; where systemd is absent it relies on
``runlevel``, which such hosts often lack. This module asks at run time which
init is in charge: systemd booted (``/run/systemd/system`` exists) goes through
Salt's ``service`` module unchanged; anything else goes through Debian's init
scripts (``service NAME ACTION``, which gives the daemon a clean environment,
as a boot would).

Enabling at boot without a running systemd: ``systemctl enable`` works offline
where systemd is installed; otherwise ``update-rc.d``.
"""

from __future__ import annotations

import glob
import os
import shutil
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_service"
__func_alias__ = {"reload_": "reload"}

SYSTEMD_RUNTIME = "/run/systemd/system"  # sd_booted(): systemd is PID 1
INIT_SCRIPTS = "/etc/init.d"
RUNLEVELS = "2345"
TIMEOUT = 120
NGINX_PID = "/run/nginx.pid"
RELOAD_WAIT = 30  # seconds for nginx's master to replace its workers after a reload


def __virtual__():
    if not os.path.isdir(INIT_SCRIPTS) and not os.path.isdir(SYSTEMD_RUNTIME):
        return (False, "sentry_service: neither a running systemd nor /etc/init.d on this host")
    return __virtualname__


def init_system() -> str:
    """
    Which init is in charge here: ``systemd`` (booted) or ``sysv`` (init scripts).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.init_system
    """
    return "systemd" if os.path.isdir(SYSTEMD_RUNTIME) else "sysv"


def _script(name: str) -> str:
    path = os.path.join(INIT_SCRIPTS, name)
    if not os.access(path, os.X_OK):
        raise CommandExecutionError(
            f"{name}: systemd is not running on this host and there is no init script {path}; "
            f"install the package that provides the service, or boot with systemd"
        )
    return path


def _sysv(name: str, action: str) -> dict:
    """Run the init script's ``action`` as ``service`` does: clean environment, no policy-rc.d."""
    script = _script(name)
    argv = ["service", name, action] if shutil.which("service") else [script, action]
    return __salt__["cmd.run_all"](argv, python_shell=False, timeout=TIMEOUT, ignore_retcode=True)


def _act(name: str, action: str) -> bool:
    """``action`` (start, stop, restart, reload) through systemd when it runs, else the init script."""
    if init_system() == "systemd":
        return bool(__salt__[f"service.{action}"](name))
    done = _sysv(name, action)
    if done["retcode"] != 0:
        output = "\n".join(part for part in (done["stdout"], done["stderr"]) if part).strip()
        raise CommandExecutionError(f"service {name} {action} failed (exit {done['retcode']}): {output}")
    return True


def status(name: str) -> bool:
    """
    Whether the service ``name`` is running.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.status nginx
    """
    if init_system() == "systemd":
        return bool(__salt__["service.status"](name))
    return _sysv(name, "status")["retcode"] == 0


def start(name: str) -> bool:
    """
    Start the service ``name``; True once its init says it started.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.start supervisor
    """
    return _act(name, "start")


def stop(name: str) -> bool:
    """
    Stop the service ``name``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.stop nginx
    """
    return _act(name, "stop")


def stop_nginx_at_once(name: str = "nginx", timeout: float = 30) -> bool:
    """
    Stop nginx without waiting on anybody: its fast shutdown (``nginx -s
    stop``: open connections closed, where a graceful stop waits out long
    polls), waited for until its master has gone (it removes its pid file);
    then the service ``name`` as usual only if its init still says it runs
    (Debian's init script sleeps a second after any stop). True when nginx
    ran.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.stop_nginx_at_once
    """
    ran = os.path.exists(NGINX_PID)
    __salt__["cmd.run_all"](["nginx", "-s", "stop"], python_shell=False, ignore_retcode=True, output_loglevel="quiet")
    deadline = time.monotonic() + timeout
    while os.path.exists(NGINX_PID) and time.monotonic() < deadline:
        time.sleep(0.02)
    if status(name):
        _act(name, "stop")
    return ran


def restart(name: str) -> bool:
    """
    Restart the service ``name`` (start it when it is not running); True once
    it runs again.

    Without a running systemd this is stop, wait until stopped, then start:
    Debian's init script for supervisor starts again before the old
    supervisord has gone, and so leaves none running while it reports success.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.restart supervisor
    """
    if init_system() == "systemd":
        return _act(name, "restart")
    if status(name):
        _act(name, "stop")
        _wait_until(name, running=False)
    _act(name, "start")
    _wait_until(name, running=True)
    return True


def _wait_until(name: str, running: bool) -> None:
    """Until the init script says ``name`` runs (or not), ``TIMEOUT`` s at most."""
    deadline = time.monotonic() + TIMEOUT
    while status(name) != running:
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"service {name} {'start' if running else 'stop'} returned, but after {TIMEOUT} s "
                f"'service {name} status' still says it {'does not run' if running else 'runs'}"
            )
        time.sleep(0.2)


def reload_(name: str) -> bool:
    """
    Have the running service ``name`` reread its configuration.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.reload nginx
    """
    if name != "nginx":
        return _act(name, "reload")
    # nginx answers a reload at once and switches later: wait until no worker of the old configuration serves.
    before = _nginx_workers()
    _act(name, "reload")
    deadline = time.monotonic() + RELOAD_WAIT
    while before:
        now = _nginx_workers()
        if now and not now & before:
            break
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"nginx was told to reload but its workers still serve the old configuration after {RELOAD_WAIT} s; "
                f"see /var/log/nginx/error.log"
            )
        time.sleep(0.1)
    return True


def _nginx_workers() -> set[int]:
    """PIDs of the workers nginx's master serves with (not those finishing after a reload)."""
    try:
        with open(NGINX_PID, encoding="ascii") as pidfile:
            master = int(pidfile.read().strip())
    except (OSError, ValueError):
        return set()
    workers = set()
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{proc}/stat", encoding="utf-8", errors="replace") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"{proc}/cmdline", "rb") as cmdline:
                title = cmdline.read().replace(b"\0", b" ").strip()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent == master and title == b"nginx: worker process":
            workers.add(int(os.path.basename(proc)))
    return workers


def _rc_links(name: str) -> list[str]:
    return [link for level in RUNLEVELS for link in glob.glob(f"/etc/rc{level}.d/S[0-9][0-9]{name}")]


def enabled(name: str) -> bool:
    """
    Whether ``name`` starts at boot.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.enabled nginx
    """
    if init_system() == "systemd":
        return bool(__salt__["service.enabled"](name))
    if shutil.which("systemctl"):
        # systemd installed, not running: it is what would boot the host.
        answer = __salt__["cmd.run_all"](["systemctl", "is-enabled", name], python_shell=False, ignore_retcode=True)
        return answer["stdout"].strip() in ("enabled", "enabled-runtime", "alias", "static", "generated")
    return bool(_rc_links(name))


def enable(name: str) -> bool:
    """
    Have ``name`` start at boot.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_service.enable supervisor
    """
    if init_system() == "systemd":
        return bool(__salt__["service.enable"](name))
    _script(name)
    argv = ["systemctl", "enable", name] if shutil.which("systemctl") else ["update-rc.d", name, "enable"]
    if argv[0] == "update-rc.d" and not _rc_links(name):
        # No links at all yet (never installed with defaults): make them first.
        __salt__["cmd.run_all"](["update-rc.d", name, "defaults"], python_shell=False)
    done = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if done["retcode"] != 0:
        raise CommandExecutionError(f"{' '.join(argv)} failed: {done['stderr'] or done['stdout']}")
    return True
