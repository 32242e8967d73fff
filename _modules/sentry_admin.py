"""Administer sentry, the private Python package index, on this minion.

Talks to the ``sentry`` package's commands (``/usr/sbin/sentry-server``) for
work on the serverdir. Secrets go to commands on stdin, never on a command
line, and are never returned.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import logging
import os

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "sentry_admin"

SERVER_BIN = "/usr/sbin/sentry-server"
VENV_BIN = "/opt/virtualenvs/sentry/bin"
DEFAULT_SERVERDIR = "/var/lib/sentry/data"
DEFAULT_USER = "sentry"
NODEINFO = ".nodeinfo"


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_admin: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _run_as(user: str, argv: list[str], stdin: str | None = None, umask: str | None = None) -> dict:
    """Run ``argv`` as ``user`` (runuser, which costs nothing when nothing runs); output is never logged."""
    result = __salt__["cmd.run_all"](
        ["runuser", "-u", user, "--", *argv],
        python_shell=False,
        stdin=stdin,
        umask=umask,
        output_loglevel="quiet",
        ignore_retcode=True,
    )
    if result["retcode"] != 0:
        raise CommandExecutionError(
            f"{os.path.basename(argv[0])} failed (exit {result['retcode']}): "
            f"{(result['stderr'] or result['stdout']).strip()}"
        )
    return result


def is_initialised(serverdir: str = DEFAULT_SERVERDIR) -> bool:
    """
    Whether ``serverdir`` holds an initialised server.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.is_initialised /var/lib/sentry/data
    """
    return os.path.exists(os.path.join(serverdir, NODEINFO))


def initialise(
    serverdir: str = DEFAULT_SERVERDIR,
    root_password: str | None = None,
    master_url: str | None = None,
    no_root_pypi: bool = False,
    user: str = DEFAULT_USER,
) -> dict:
    """
    Initialise an empty serverdir once: a master with ``root_password``, or a
    replica of ``master_url``. An initialised serverdir is never touched.

    The password reaches ``sentry-server --init`` on stdin.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.initialise /var/lib/sentry/data root_password='...'
        salt '*' sentry_admin.initialise /var/lib/sentry/replica master_url=http://master:3141
    """
    if is_initialised(serverdir):
        raise CommandExecutionError(f"{serverdir} is already initialised; it is never initialised twice")
    argv = [SERVER_BIN, "--init", "--serverdir", serverdir]
    stdin = None
    if master_url:
        argv += ["--master-url", master_url]
    elif root_password:
        argv += ["--root-passwd-file", "-"]
        stdin = root_password + "\n"
    else:
        raise CommandExecutionError("a master needs a root password (or give master_url for a replica)")
    if no_root_pypi:
        argv.append("--no-root-pypi")
    _run_as(user, argv, stdin=stdin)
    return {"serverdir": serverdir, "role": "replica" if master_url else "master", "initialised": True}


def gen_secret(path: str, user: str = DEFAULT_USER) -> dict:
    """
    Create the shared secret file ``path`` (0600, owned by ``user``) if it is missing.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.gen_secret /var/lib/sentry/.secret
    """
    if os.path.exists(path):
        return {"path": path, "created": False}
    _run_as(user, [os.path.join(VENV_BIN, "devpi-gen-secret"), "--secretfile", path], umask="077")
    return {"path": path, "created": True}
