"""Administer sentry, the private Python package index, on this minion.

Talks to the ``sentry`` package's commands (``/usr/sbin/sentry-server``) for
work on the serverdir. Secrets go to commands on stdin, never on a command
line, and are never returned.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request

import salt.utils.data
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "sentry_admin"
__func_alias__ = {"import_": "import"}

SERVER_BIN = "/usr/sbin/sentry-server"
VENV_BIN = "/opt/virtualenvs/sentry/bin"
DEFAULT_SERVERDIR = "/var/lib/sentry/data"
DEFAULT_USER = "sentry"
NODEINFO = ".nodeinfo"
HTTP_TIMEOUT = 30


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


# --- the server's HTTP API ---------------------------------------------------


def _server_url(url: str | None) -> str:
    """``url``, or the local server the formula's pillar describes."""
    if url:
        return url.rstrip("/")
    server = salt.utils.data.traverse_dict_and_list(__pillar__, "sentry:server", {}) or {}
    return f"http://{server.get('host', '127.0.0.1')}:{server.get('port', 3141)}"


def _request(method: str, url: str, body: dict | None = None, auth: str | None = None) -> tuple[int, dict]:
    """One JSON request; returns (status, decoded body). Never logs the body (it may carry passwords)."""
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if auth:
        headers["X-Devpi-Auth"] = auth
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) URL
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"message": exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        raise CommandExecutionError(f"sentry at {url} does not answer: {exc}; is the server running?") from None


def _login(base: str, user: str, password: str) -> str:
    """Log in; returns the X-Devpi-Auth header value (the token never leaves this module)."""
    status, body = _request("POST", f"{base}/+login", {"user": user, "password": password})
    if status != 200:
        raise CommandExecutionError(f"login as {user} at {base} failed ({status}): {body.get('message', body)}")
    token = body["result"]["password"]
    return base64.b64encode(f"{user}:{token}".encode()).decode()


def status(url: str | None = None) -> dict:
    """
    The server's state: role (master/replica), serial, uuid, and on a replica
    its master's serial and how far behind it is.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.status
        salt '*' sentry_admin.status url=http://127.0.0.1:3142
    """
    base = _server_url(url)
    code, body = _request("GET", f"{base}/+status")
    if code != 200:
        raise CommandExecutionError(f"GET {base}/+status answered {code}: {body.get('message', body)}")
    result = body["result"]
    role = result.get("role", "").lower()
    info = {
        "up": True,
        "url": base,
        "role": "replica" if role == "replica" else "master",
        "serial": result.get("serial"),
        "uuid": result.get("uuid"),
        "serverdir": result.get("serverdir"),
    }
    if info["role"] == "replica":
        primary_serial = result.get("primary-serial", result.get("master-serial"))
        info.update(
            {
                "master_url": result.get("primary-url", result.get("master-url")),
                "master_serial": primary_serial,
                "lag": None if primary_serial is None else primary_serial - result.get("serial", 0),
                "in_sync_at": result.get("replica-in-sync-at"),
                "replication_errors": result.get("replication-errors", {}),
            }
        )
    return info


def version(url: str | None = None) -> dict:
    """
    Versions: the installed sentry package, and the devpi-server answering at ``url``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.version
    """
    base = _server_url(url)
    request = urllib.request.Request(f"{base}/+api", headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            server = response.headers.get("X-Devpi-Server-Version")
    except (urllib.error.URLError, OSError):
        server = None
    return {"package": __salt__["pkg.version"]("sentry") or None, "server": server}


def _root(base: str) -> dict:
    code, body = _request("GET", f"{base}/")
    if code != 200:
        raise CommandExecutionError(f"GET {base}/ answered {code}: {body.get('message', body)}")
    return body["result"]


def list_users(url: str | None = None) -> list[str]:
    """
    The server's user names.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.list_users
    """
    return sorted(_root(_server_url(url)))


def list_indexes(url: str | None = None, user: str | None = None) -> dict:
    """
    The server's indexes as ``{"user/index": {type, bases, volatile, acl_upload}}``,
    optionally of one ``user``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.list_indexes
        salt '*' sentry_admin.list_indexes user=alice
    """
    indexes = {}
    for name, info in _root(_server_url(url)).items():
        if user and name != user:
            continue
        for index, config in (info.get("indexes") or {}).items():
            indexes[f"{name}/{index}"] = {
                key: config.get(key) for key in ("type", "bases", "volatile", "acl_upload") if key in config
            }
    return indexes


# --- users and indexes (as root) ---------------------------------------------

INDEX_KEYS = ("bases", "volatile", "acl_upload", "mirror_whitelist")


def _as_root(url: str | None, root_password: str | None) -> tuple[str, str]:
    """(base URL, root's auth header); the password comes from pillar unless given."""
    base = _server_url(url)
    password = root_password or salt.utils.data.traverse_dict_and_list(__pillar__, "sentry:server:root_password", "")
    if not password:
        raise CommandExecutionError("no root password: set pillar sentry:server:root_password or pass root_password")
    return base, _login(base, "root", password)


def _check(code: int, body: dict, what: str, ok: tuple[int, ...] = (200, 201)) -> dict:
    if code not in ok:
        raise CommandExecutionError(f"{what} failed ({code}): {body.get('message', body)}")
    return body.get("result", {})


def user_get(name: str, url: str | None = None) -> dict | None:
    """
    A user's record (username, email, indexes) or None if there is no such user.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_get alice
    """
    code, body = _request("GET", f"{_server_url(url)}/{name}")
    if code == 404:
        return None
    return _check(code, body, f"reading user {name}", ok=(200,))


def user_password_matches(name: str, password: str, url: str | None = None) -> bool:
    """
    Whether ``password`` logs ``name`` in (how a password is compared without reading it back).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_password_matches alice '...'
    """
    code, _body = _request("POST", f"{_server_url(url)}/+login", {"user": name, "password": password})
    return code == 200


def user_set(
    name: str,
    password: str | None = None,
    email: str | None = None,
    url: str | None = None,
    root_password: str | None = None,
) -> dict:
    """
    Create the user ``name`` or change its password/email, as root.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_set alice password='...' email=alice@example.org
    """
    base, auth = _as_root(url, root_password)
    fields = {key: value for key, value in (("password", password), ("email", email)) if value is not None}
    if user_get(name, url=base) is None:
        if "password" not in fields:
            raise CommandExecutionError(f"a new user {name} needs a password")
        _check(*_request("PUT", f"{base}/{name}", fields, auth), f"creating user {name}")
        return {"user": name, "created": True, "changed": sorted(fields)}
    if fields:
        _check(*_request("PATCH", f"{base}/{name}", fields, auth), f"changing user {name}")
    return {"user": name, "created": False, "changed": sorted(fields)}


def user_delete(name: str, url: str | None = None, root_password: str | None = None) -> bool:
    """
    Delete the user ``name`` with its indexes and their files. True if it existed.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_delete alice
    """
    base, auth = _as_root(url, root_password)
    if user_get(name, url=base) is None:
        return False
    _check(*_request("DELETE", f"{base}/{name}", auth=auth), f"deleting user {name}")
    return True


def _split_index(name: str) -> tuple[str, str]:
    user, _, index = name.partition("/")
    if not user or not index or "/" in index:
        raise CommandExecutionError(f"an index is named USER/INDEX, got {name!r}")
    return user, index


def index_get(name: str, url: str | None = None) -> dict | None:
    """
    The configuration of index ``user/index``, or None if it does not exist.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_get alice/dev
    """
    user, index = _split_index(name)
    code, body = _request("GET", f"{_server_url(url)}/{user}/{index}?no_projects=")
    if code == 404:
        return None
    result = _check(code, body, f"reading index {name}", ok=(200,))
    return {key: result[key] for key in ("type", *INDEX_KEYS) if key in result}


def index_set(name: str, url: str | None = None, root_password: str | None = None, **config) -> dict:
    """
    Create index ``user/index`` or change its settings (bases, volatile,
    acl_upload, mirror_whitelist), as root. Bases must exist.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_set alice/dev bases='[root/pypi]' volatile=False
    """
    user, index = _split_index(name)
    wanted = {key: value for key, value in config.items() if key in INDEX_KEYS and value is not None}
    base, auth = _as_root(url, root_password)
    for base_index in wanted.get("bases", []):
        if index_get(base_index, url=base) is None:
            raise CommandExecutionError(f"base index {base_index} of {name} does not exist")
    current = index_get(name, url=base)
    if current is None:
        _check(*_request("PUT", f"{base}/{user}/{index}", {"type": "stage", **wanted}, auth), f"creating index {name}")
        return {"index": name, "created": True, "changed": sorted(wanted)}
    changed = {key: value for key, value in wanted.items() if current.get(key) != value}
    if changed:
        _check(*_request("PATCH", f"{base}/{user}/{index}", {**current, **changed}, auth), f"changing index {name}")
    return {"index": name, "created": False, "changed": sorted(changed)}


def index_delete(name: str, url: str | None = None, root_password: str | None = None) -> bool:
    """
    Delete index ``user/index`` with its files. True if it existed.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_delete alice/dev
    """
    user, index = _split_index(name)
    base, auth = _as_root(url, root_password)
    if index_get(name, url=base) is None:
        return False
    _check(*_request("DELETE", f"{base}/{user}/{index}", auth=auth), f"deleting index {name}")
    return True


def bootstrap_index(
    user: str,
    index: str,
    bases: str | list[str] = "root/pypi",
    password: str | None = None,
    email: str | None = None,
    acl_upload: list[str] | None = None,
    volatile: bool | None = None,
    url: str | None = None,
    root_password: str | None = None,
) -> dict:
    """
    Make ``user`` (with ``password``) and its index ``index`` with ``bases``,
    idempotently: what exists and is right stays untouched.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.bootstrap_index alice dev bases=root/pypi password='...'
    """
    bases = [bases] if isinstance(bases, str) else list(bases)
    made_user = user_get(user, url=url) is None
    if made_user:
        user_set(user, password=password, email=email, url=url, root_password=root_password)
    result = index_set(
        f"{user}/{index}", url=url, root_password=root_password, bases=bases, acl_upload=acl_upload, volatile=volatile
    )
    return {"user": user, "user_created": made_user, **result}


# --- export and import -------------------------------------------------------

EXPORT_INDEX = "dataindex.json"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _program_running(program: str | None) -> bool:
    if not program or not __salt__["cmd.which_bin"](["supervisorctl"]):
        return False
    return __salt__["supervisord.status"]().get(program, {}).get("state") in ("RUNNING", "STARTING", "BACKOFF")


def _supervisor(action: str, program: str) -> None:
    output = __salt__[f"supervisord.{action}"](program)
    if "ERROR" in output:
        raise CommandExecutionError(f"supervisorctl {action} {program} failed: {output}")


def export_counts(path: str) -> dict:
    """
    Users, indexes and release files in the export at ``path``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.export_counts /var/lib/sentry/export-20260101-120000
    """
    try:
        with open(os.path.join(path, EXPORT_INDEX), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"{path} is not a readable sentry export: {exc}") from None
    indexes = data.get("indexes", {})
    files = sum(len(index.get("files", [])) for index in indexes.values())
    return {"users": len(data.get("users", {})), "indexes": len(indexes), "files": files}


def export(
    dest: str | None = None,
    serverdir: str = DEFAULT_SERVERDIR,
    program: str | None = "sentry-server",
    restart: bool = True,
    user: str = DEFAULT_USER,
) -> dict:
    """
    Export the server's data into ``dest`` (default ``/var/lib/sentry/export-<timestamp>``).

    The supervisor ``program`` is stopped while exporting and started again
    afterwards (unless ``restart=False``) if it was running. Returns the path,
    the numbers of users, indexes and release files, and the seconds taken.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.export
        salt '*' sentry_admin.export /srv/backups/sentry-export restart=False
    """
    started = time.monotonic()
    dest = dest or os.path.join(os.path.dirname(os.path.abspath(serverdir)), f"export-{_timestamp()}")
    if os.path.abspath(dest).startswith(os.path.abspath(serverdir) + os.sep):
        raise CommandExecutionError(f"export destination {dest} lies inside the serverdir {serverdir}; choose another")
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise CommandExecutionError(f"export destination {dest} exists and is not empty; choose another")
    if not is_initialised(serverdir):
        raise CommandExecutionError(f"{serverdir} holds no initialised server: nothing to export")
    was_running = _program_running(program)
    if was_running:
        _supervisor("stop", program)
    try:
        _run_as(user, [SERVER_BIN, "--serverdir", serverdir, "--export", dest])
    finally:
        if was_running and restart:
            _supervisor("start", program)
    return {"path": dest, **export_counts(dest), "seconds": round(time.monotonic() - started, 2)}


def import_(
    src: str,
    serverdir: str = DEFAULT_SERVERDIR,
    move_aside: bool = False,
    program: str | None = "sentry-server",
    restart: bool = True,
    user: str = DEFAULT_USER,
    group: str = DEFAULT_USER,
) -> dict:
    """
    Import the export at ``src`` into a fresh ``serverdir`` (exposed as ``sentry_admin.import``).

    A serverdir that holds data is refused, unless ``move_aside=True`` moves it
    to ``_data-backup-<timestamp>`` beside it first: nothing is ever deleted.
    A failed import leaves the serverdir as it was before the import began.
    The files are given to ``user``:``group``. The supervisor ``program`` is
    stopped meanwhile and started again (unless ``restart=False``).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.import /var/lib/sentry/export-20260101-120000
        salt '*' sentry_admin.import /srv/backups/sentry-export move_aside=True
    """
    started = time.monotonic()
    counts = export_counts(src)
    backup = None
    occupied = os.path.exists(serverdir) and bool(os.listdir(serverdir))
    if occupied and not move_aside:
        raise CommandExecutionError(
            f"serverdir {serverdir} holds data; import only goes into a fresh one (move_aside=True moves it aside)"
        )
    was_running = _program_running(program)
    if was_running:
        _supervisor("stop", program)
    try:
        if occupied:
            backup = os.path.join(os.path.dirname(os.path.abspath(serverdir)), f"_data-backup-{_timestamp()}")
            stat = os.stat(serverdir)
            os.rename(serverdir, backup)
            os.mkdir(serverdir, stat.st_mode & 0o7777)
            os.chown(serverdir, stat.st_uid, stat.st_gid)
        result = __salt__["cmd.run_all"](
            [SERVER_BIN, "--serverdir", serverdir, "--import", src],
            python_shell=False,
            output_loglevel="quiet",
            ignore_retcode=True,
        )
        if result["retcode"] != 0:
            if backup:  # put the old data back where it was
                shutil.rmtree(serverdir, ignore_errors=True)
                os.rename(backup, serverdir)
            raise CommandExecutionError(f"import of {src} failed: {(result['stderr'] or result['stdout']).strip()}")
        for root, dirs, files in os.walk(serverdir):
            for name in (*dirs, *files):
                shutil.chown(os.path.join(root, name), user, group)
        shutil.chown(serverdir, user, group)
    finally:
        if was_running and restart:
            _supervisor("start", program)
    return {
        "path": serverdir,
        "source": src,
        "backup": backup,
        **counts,
        "seconds": round(time.monotonic() - started, 2),
    }
