"""Administer sentry, the private Python package index, on this minion.

Talks to the ``sentry`` package's commands (``/usr/sbin/sentry-server``) for
work on the serverdir. Secrets go to commands on stdin, never on a command
line, and are never returned.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import xmlrpc.client

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
READY_TIMEOUT = 120  # seconds a (re)started server may take to answer
SUPERVISOR_SOCKET = "/var/run/supervisor.sock"
# What exports and moved-aside serverdirs are named, beside the serverdir: prefix + timestamp.
BACKUP_KINDS = {"backup": "_data-backup-", "failed": "_data-failed-", "export": "export-"}


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
        raise CommandExecutionError(
            f"initialising {serverdir} as a master needs root_password (or master_url to make a replica)"
        )
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
                "master_uuid": result.get("primary-uuid", result.get("master-uuid")),
                "master_serial": primary_serial,
                "lag": None if primary_serial is None else primary_serial - result.get("serial", 0),
                "in_sync_at": result.get("replica-in-sync-at"),
                "replication_errors": result.get("replication-errors", {}),
            }
        )
        if "replica-files-in-sync-at" in result:  # newer servers: when no release file was left to fetch
            info["files_in_sync_at"] = result["replica-files-in-sync-at"]
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

INDEX_KEYS = (
    "bases",
    "volatile",
    "acl_upload",
    "mirror_whitelist",
    "mirror_url",
    "mirror_cache_expiry",
    "mirror_use_external_urls",
    "mirror_no_project_list",
)


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


def _check_user_name(name: str) -> str:
    """``name`` if it can be a user name; the server would answer a space or slash with a confusing error."""
    if not isinstance(name, str) or not name or any(char.isspace() or char == "/" for char in name):
        raise CommandExecutionError(f"a user name has no spaces or slashes, got {name!r}")
    return name


def user_get(name: str, url: str | None = None) -> dict | None:
    """
    A user's record (username, email, indexes) or None if there is no such user.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_get alice
    """
    code, body = _request("GET", f"{_server_url(url)}/{_check_user_name(name)}")
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
    _check_user_name(name)
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
    _check_user_name(name)
    base, auth = _as_root(url, root_password)
    if user_get(name, url=base) is None:
        return False
    _check(*_request("DELETE", f"{base}/{name}", auth=auth), f"deleting user {name}")
    return True


def _split_index(name: str) -> tuple[str, str]:
    user, _, index = name.partition("/") if isinstance(name, str) else ("", "", "")
    if not user or not index or "/" in index or any(char.isspace() for char in name):
        raise CommandExecutionError(f"an index is named USER/INDEX, without spaces, got {name!r}")
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


def _check_bases(name: str, bases: list[str], url: str | None) -> None:
    """Every base of index ``name`` exists on the server; raises naming the first that does not."""
    for base_index in bases:
        if index_get(base_index, url=url) is None:
            raise CommandExecutionError(
                f"base index {base_index} of {name} does not exist: create it first, or name another in bases"
            )


def index_set(name: str, url: str | None = None, root_password: str | None = None, **config) -> dict:
    """
    Create index ``user/index`` or change its settings (bases, volatile,
    acl_upload, mirror_whitelist; for ``type=mirror`` mirror_url,
    mirror_cache_expiry, mirror_use_external_urls, mirror_no_project_list),
    as root. Bases must exist; the type is set at creation and never changes.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_set alice/dev bases='[root/pypi]' volatile=False
        salt '*' sentry_admin.index_set root/upstream type=mirror mirror_url=https://pypi.example.org/simple/
    """
    user, index = _split_index(name)
    wanted = {key: value for key, value in config.items() if key in INDEX_KEYS and value is not None}
    kind = config.get("type") or "stage"
    base, auth = _as_root(url, root_password)
    _check_bases(name, wanted.get("bases", []), base)
    current = index_get(name, url=base)
    if current is None:
        _check(*_request("PUT", f"{base}/{user}/{index}", {"type": kind, **wanted}, auth), f"creating index {name}")
        return {"index": name, "created": True, "changed": sorted(wanted)}
    if config.get("type") and current.get("type") != config["type"]:
        raise CommandExecutionError(
            f"index {name} is a {current.get('type')} index; its type cannot become {config['type']}:"
            f" delete it (with its files) or declare it as {current.get('type')}"
        )
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
    name = f"{_check_user_name(user)}/{index}"
    _split_index(name)
    # Checked before the user is made: a missing base must leave the server as it was.
    _check_bases(name, bases, url)
    made_user = user_get(user, url=url) is None
    if made_user:
        user_set(user, password=password, email=email, url=url, root_password=root_password)
    result = index_set(
        name, url=url, root_password=root_password, bases=bases, acl_upload=acl_upload, volatile=volatile
    )
    return {"user": user, "user_created": made_user, **result}


# --- export and import -------------------------------------------------------

EXPORT_INDEX = "dataindex.json"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _supervisor_api():
    path = salt.utils.data.traverse_dict_and_list(__pillar__, "sentry:supervisor:socket", SUPERVISOR_SOCKET)
    try:
        return __utils__["sentry_supervisor.connect"](path, wait=10)
    except RuntimeError as exc:
        raise CommandExecutionError(f"{exc}; is supervisor running (state sentry.supervisor)?") from None


def _program_running(program: str | None) -> bool:
    if not program:
        return False
    try:
        api = _supervisor_api()
    except CommandExecutionError:
        return False  # no supervisor, so nothing of ours runs under it
    return __utils__["sentry_supervisor.is_running"](api, program)


def _stop(program: str) -> None:
    """Stop the supervisor ``program`` and wait until it has exited."""
    try:
        __utils__["sentry_supervisor.stop"](_supervisor_api(), program)
    except xmlrpc.client.Error as exc:
        raise CommandExecutionError(f"supervisor could not stop {program}: {exc}") from None


def _start(program: str, url: str | None, timeout: float = READY_TIMEOUT) -> dict:
    """Start the supervisor ``program``; status() once the server answers.

    No wait for supervisor's startsecs: the server answering is what counts,
    and a program that dies meanwhile fails at once with its last output.
    """
    api = _supervisor_api()
    try:
        __utils__["sentry_supervisor.start"](api, program, wait=False)
    except xmlrpc.client.Error as exc:
        raise CommandExecutionError(f"supervisor could not start {program}: {exc}") from None
    return _wait_until_up(url, timeout, program)


def _read_export(path: str) -> dict:
    """The export's index (users, indexes and their files), or a clear error."""
    try:
        with open(os.path.join(path, EXPORT_INDEX), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"{path} is not a readable sentry export: {exc}") from None


def export_counts(path: str) -> dict:
    """
    Users, indexes and release files in the export at ``path``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.export_counts /var/lib/sentry/export-20260101-120000
    """
    data = _read_export(path)
    indexes = data.get("indexes", {})
    files = sum(len(index.get("files", [])) for index in indexes.values())
    return {
        "users": len(data.get("users", {})),
        "indexes": len(indexes),
        "files": files,
        "root_pypi": "root/pypi" in indexes,
    }


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
    dest = dest or os.path.join(os.path.dirname(os.path.abspath(serverdir)), BACKUP_KINDS["export"] + _timestamp())
    if os.path.abspath(dest).startswith(os.path.abspath(serverdir) + os.sep):
        raise CommandExecutionError(f"export destination {dest} lies inside the serverdir {serverdir}; choose another")
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise CommandExecutionError(f"export destination {dest} exists and is not empty; choose another")
    if not is_initialised(serverdir):
        raise CommandExecutionError(f"{serverdir} holds no initialised server: nothing to export")
    was_running = _program_running(program)
    if was_running:
        _stop(program)
    try:
        _run_as(user, [SERVER_BIN, "--serverdir", serverdir, "--export", dest])
    finally:
        if was_running and restart:
            _start(program, None)  # back in service when this returns
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
        _stop(program)
    try:
        if occupied:
            backup = _move_aside(serverdir, "backup")
        # Without this the import adds a root/pypi mirror the exported server did not have.
        no_root_pypi = [] if counts["root_pypi"] else ["--no-root-pypi"]
        result = __salt__["cmd.run_all"](
            [SERVER_BIN, "--serverdir", serverdir, "--import", src, *no_root_pypi],
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
            _start(program, None)  # back in service when this returns
    return {
        "path": serverdir,
        "source": src,
        "backup": backup,
        **counts,
        "seconds": round(time.monotonic() - started, 2),
    }


# --- upgrades ----------------------------------------------------------------

UPGRADE_LOG = "upgrades.jsonl"


def _wait_until_up(url: str | None, timeout: float, program: str | None = None) -> dict:
    """status() once the server answers; CommandExecutionError after ``timeout`` seconds,
    or at once with its last output when the supervisor ``program`` has died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return status(url)
        except CommandExecutionError as exc:
            if program:
                api = _supervisor_api()
                state = __utils__["sentry_supervisor.state"](api, program)
                if state in ("FATAL", "EXITED", "STOPPED", "ABSENT"):
                    output = __utils__["sentry_supervisor.tail"](api, program).strip()[-1000:]
                    raise CommandExecutionError(f"{program} is {state}; its last output:\n{output}") from None
            if time.monotonic() > deadline:
                raise CommandExecutionError(f"the server did not come up within {timeout}s: {exc}") from None
        time.sleep(0.2)


def _move_aside(serverdir: str, label: str) -> str:
    """Rename ``serverdir`` to ``_data-<label>-<timestamp>`` beside it and leave an empty one (same owner, mode)."""
    aside = os.path.join(os.path.dirname(os.path.abspath(serverdir)), BACKUP_KINDS[label] + _timestamp())
    while os.path.exists(aside):
        aside += "-1"
    stat = os.stat(serverdir)
    os.rename(serverdir, aside)
    os.mkdir(serverdir, stat.st_mode & 0o7777)
    os.chown(serverdir, stat.st_uid, stat.st_gid)
    return aside


def _put_back(serverdir: str, backup: str) -> str:
    """Undo _move_aside: what is in ``serverdir`` now goes to ``_data-failed-<timestamp>``."""
    failed = _move_aside(serverdir, "failed")
    os.rmdir(serverdir)
    os.rename(backup, serverdir)
    return failed


def _fetch(package: str, version: str, refresh: bool) -> None:
    """Download ``version`` of ``package`` into apt's cache while the server still serves."""
    __salt__["pkg.install"](package, version=version, refresh=refresh, downloadonly=True)


def _install(package: str, version: str, refresh: bool) -> None:
    """Install exactly ``version`` of ``package`` (up or down) from the configured apt repositories."""
    __salt__["pkg.install"](package, version=version, refresh=refresh)
    installed = __salt__["pkg.version"](package)
    if installed != version:
        raise CommandExecutionError(f"{package} {version} was asked for, {installed or 'nothing'} is installed")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_file(export_path: str, data: dict) -> dict | None:
    """One release file of the export (``data``: its index): index, project and sha256, to download later."""
    indexes = data.get("indexes", {})
    for name in sorted(indexes):
        for entry in indexes[name].get("files", []):
            if entry.get("type") == "releasefile":
                return {
                    "index": name,
                    "project": entry["projectname"] if "projectname" in entry else entry["project"],
                    "basename": os.path.basename(entry["relpath"]),
                    "sha256": _sha256(os.path.join(export_path, entry["relpath"])),
                }
    return None


def _download_sha256(base: str, known: dict) -> str:
    """sha256 of ``known``'s file as the server at ``base`` hands it out."""
    code, body = _request("GET", f"{base}/{known['index']}/{known['project']}")
    if code != 200:
        raise CommandExecutionError(f"project {known['project']} is missing on {known['index']} ({code})")
    for release in body["result"].values():
        for link in release.get("+links", []):
            if link["href"].rsplit("/", 1)[-1] == known["basename"]:
                path = urllib.parse.urlsplit(link["href"]).path
                with urllib.request.urlopen(base + path, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
                    return hashlib.sha256(response.read()).hexdigest()
    raise CommandExecutionError(f"{known['basename']} is not listed on {known['index']}")


def _exported_names(data: dict) -> dict:
    """The users and index names in an export's index: what the imported server must hold."""
    return {"users": sorted(data.get("users", {})), "indexes": sorted(data.get("indexes", {}))}


def _health_check(url: str | None, before: dict, exported: dict, imported: dict, known: dict | None) -> str:
    """The freshly imported server holds what was exported (``before``: _exported_names); raises otherwise."""
    base = _server_url(url)
    if any(exported[key] != imported[key] for key in ("users", "indexes", "files")):
        raise CommandExecutionError(f"the import holds other counts than the export: {imported} vs {exported}")
    users, indexes = sorted(list_users(url)), sorted(list_indexes(url))
    if users != before["users"] or indexes != before["indexes"]:
        raise CommandExecutionError(
            f"users/indexes differ after the import: {users} {indexes}, exported {before['users']} {before['indexes']}"
        )
    if known is None:
        return "no release file to download"
    if _download_sha256(base, known) != known["sha256"]:
        raise CommandExecutionError(f"{known['basename']} downloads with another sha256 than it was exported with")
    return f"{known['index']}/{known['basename']} downloads intact"


def _record(result: dict, home: str) -> None:
    """Append the result to the upgrade log in the service user's home (read by last_upgrade)."""
    try:
        with open(os.path.join(home, UPGRADE_LOG), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result}) + "\n")
    except OSError as exc:
        log.warning("sentry_admin: could not record the upgrade in %s: %s", home, exc)


def backups(home: str = "/var/lib/sentry") -> dict[str, list[str]]:
    """
    What upgrades, imports and exports left in ``home``, by kind (``backup``:
    data moved aside, ``failed``: data of a failed attempt, ``export``),
    newest first. sentry.prune_backups removes the older ones.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.backups
    """
    try:
        names = sorted(os.listdir(home), reverse=True)  # the names end in a timestamp
    except FileNotFoundError:
        names = []
    return {
        kind: [
            os.path.join(home, name)
            for name in names
            if name.startswith(prefix) and os.path.isdir(os.path.join(home, name))
        ]
        for kind, prefix in BACKUP_KINDS.items()
    }


def last_upgrade(home: str = "/var/lib/sentry") -> dict | None:
    """
    The last upgrade this minion went through (sentry_admin.upgrade or
    upgrade_replica), with the versions before and after, and the time the
    server was down.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.last_upgrade
    """
    try:
        with open(os.path.join(home, UPGRADE_LOG), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    return json.loads(lines[-1]) if lines else None


class _Steps:
    """Which step an upgrade is in, and how long each one took."""

    def __init__(self) -> None:
        self.current = "start"
        self.seconds: dict[str, float] = {}
        self._started = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[self.current] = round(now - self._started, 2)
        self.current, self._started = name, now

    def done(self) -> dict[str, float]:
        self("done")
        self.seconds.pop("start", None)
        return self.seconds


def upgrade(
    version: str,
    package: str = "sentry",
    serverdir: str = DEFAULT_SERVERDIR,
    program: str = "sentry-server",
    nginx_service: str | None = "nginx",
    refresh: bool = True,
    ready_timeout: float = READY_TIMEOUT,
    user: str = DEFAULT_USER,
    group: str = DEFAULT_USER,
    home: str = "/var/lib/sentry",
    reads_elsewhere: bool = False,
) -> dict:
    """
    Upgrade a master (or standalone) server to package ``version`` the safe
    way: download it, stop the server and nginx, export, move the data to
    ``_data-backup-<timestamp>``, install the new version, import into a fresh
    serverdir, start, and check that every user, index and release file is
    there and a known file downloads intact, then start nginx.

    On any failure it rolls back: the failed serverdir goes to
    ``_data-failed-<timestamp>``, the backup comes back, the previous version
    is reinstalled and started; the error names the step. Nothing is deleted.
    At ``version`` already, it changes nothing.

    The result (also kept for ``last_upgrade``) holds the seconds writes were
    refused (``write_outage_seconds``: server stopped until healthy again) and
    reads were (``read_outage_seconds``: nginx stopped until started again; 0
    with ``reads_elsewhere=True``, which sentry.upgrade passes when a front
    sent the reads to caught-up replicas meanwhile).

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_admin.upgrade 6.20.3-1
    """
    before_version = __salt__["pkg.version"](package)
    if not before_version:
        raise CommandExecutionError(f"{package} is not installed: nothing to upgrade (apply the sentry state first)")
    if before_version == version:
        _wait_until_up(None, ready_timeout)
        return {"changed": False, "role": "master", "version": {"old": before_version, "new": version}}
    url = _server_url(None)
    current = status(url)
    if current["role"] != "master":
        raise CommandExecutionError(f"{url} is a replica: upgrade it with sentry_admin.upgrade_replica")
    steps, state = _Steps(), {"backup": None, "installed": False}
    steps("download")
    _fetch(package, version, refresh)
    down_at = time.monotonic()
    try:
        steps("stop")
        # The server first: its exit ends the replicas' long polls of /+changelog,
        # which nginx's graceful stop would otherwise wait out (5 s on Debian).
        _stop(program)
        if nginx_service:
            __salt__["sentry_service.stop"](nginx_service)
        steps("export")
        exported = export(serverdir=serverdir, program=None, user=user)
        contents = _read_export(exported["path"])
        known, before = _known_file(exported["path"], contents), _exported_names(contents)
        steps("move data aside")
        state["backup"] = _move_aside(serverdir, "backup")
        steps("install")
        state["installed"] = True
        _install(package, version, refresh=False)
        steps("import")
        imported = import_(exported["path"], serverdir=serverdir, program=None, user=user, group=group)
        steps("start server")
        _start(program, url, ready_timeout)
        steps("health check")
        checked = _health_check(url, before, exported, imported, known)
        write_outage = round(time.monotonic() - down_at, 2)
        steps("start nginx")
        if nginx_service:
            __salt__["sentry_service.start"](nginx_service)
        down = round(time.monotonic() - down_at, 2)
    except Exception as exc:  # whatever failed, the old server comes back
        rolled_back = _roll_back(state, before_version, package, serverdir, program, nginx_service, url, ready_timeout)
        raise _give_up("master", version, steps.current, exc, rolled_back, home) from None
    result = {
        "changed": True,
        "role": "master",
        "version": {"old": before_version, "new": __salt__["pkg.version"](package)},
        "export": exported,
        "import": imported,
        "backup": state["backup"],
        "health": checked,
        "write_outage_seconds": write_outage,
        "read_outage_seconds": 0.0 if reads_elsewhere else down,
        "steps": steps.done(),
    }
    _record(result, home)
    return result


def _give_up(
    role: str, version: str, failed_step: str, exc: Exception, rolled_back: str, home: str
) -> CommandExecutionError:
    """Record a failed, rolled back upgrade; the error to raise, naming its step."""
    _record(
        {"changed": False, "role": role, "failed_step": failed_step, "error": str(exc), "rollback": rolled_back}, home
    )
    what = "upgrade" if role == "master" else "replica upgrade"
    return CommandExecutionError(
        f"{what} to {version} failed at step '{failed_step}': {exc}. Rolled back: {rolled_back}"
    )


def _roll_back(state, version, package, serverdir, program, nginx_service, url, ready_timeout) -> str:
    """Bring the previous version and data back; returns what was done, raises when even that fails."""
    done = []
    try:
        _stop(program)
        if state["backup"]:
            done.append(f"new data kept in {_put_back(serverdir, state['backup'])}, old data back in {serverdir}")
        if state["installed"] and __salt__["pkg.version"](package) != version:
            _install(package, version, refresh=False)
            done.append(f"{package} {version} reinstalled")
        _start(program, url, ready_timeout)
        if nginx_service:
            __salt__["sentry_service.start"](nginx_service)
        done.append("server and nginx running")
    except Exception as exc:
        raise CommandExecutionError(
            f"ROLLBACK FAILED ({exc}) after: {'; '.join(done) or 'nothing'}. "
            f"By hand: stop {program}, put the newest {os.path.dirname(serverdir)}/_data-backup-* back at "
            f"{serverdir}, install {package}={version}, start {program} and nginx."
        ) from None
    return "; ".join(done)


def _master_status(master_url: str) -> dict:
    """The master's /+status as its replicas see it (through its nginx)."""
    code, body = _request("GET", f"{master_url.rstrip('/')}/+status")
    if code != 200:
        raise CommandExecutionError(f"the master at {master_url} answered {code} to /+status")
    return body["result"]


def _follows(replica: dict, master: dict) -> bool:
    """Whether ``replica`` (status()) follows this very master and has all it has."""
    return (
        replica.get("master_uuid") == master.get("uuid")
        and isinstance(replica.get("serial"), int)
        and replica["serial"] >= master.get("serial", 0)
    )


def wait_synced(master_url: str | None = None, timeout: float = 600, url: str | None = None) -> dict:
    """
    Wait until this replica follows its master and holds every change the
    master had when the wait began; returns the replica's status.

    CLI Example:

    .. code-block:: bash

        salt 'sentry-replica*' sentry_admin.wait_synced timeout=300
    """
    master_url = master_url or salt.utils.data.traverse_dict_and_list(__pillar__, "sentry:server:master_url", "")
    if not master_url:
        raise CommandExecutionError("no master_url given and none in pillar sentry:server:master_url")
    master = _master_status(master_url)
    deadline = time.monotonic() + timeout
    caught_up_at = None
    while True:
        try:
            current = status(url)
            if _follows(current, master):
                # Then every release file too, where the server tells: its queue was empty since.
                caught_up_at = caught_up_at or time.time()
                if "files_in_sync_at" not in current or (current["files_in_sync_at"] or 0) >= caught_up_at:
                    return current
        except CommandExecutionError:
            current = {"up": False}
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"the replica did not catch up with {master_url} (serial {master.get('serial')}, "
                f"uuid {master.get('uuid')}) within {timeout}s; it is at {current}"
            )
        time.sleep(0.5)


def upgrade_replica(
    version: str,
    master_url: str | None = None,
    package: str = "sentry",
    serverdir: str = DEFAULT_SERVERDIR,
    program: str = "sentry-server",
    refresh: bool = True,
    sync_timeout: float = 600,
    user: str = DEFAULT_USER,
    home: str = "/var/lib/sentry",
    reads_elsewhere: bool = False,
) -> dict:
    """
    Bring a replica to package ``version`` and to its (upgraded) master: stop
    it, install the version, move its data to ``_data-backup-<timestamp>``,
    initialise a fresh replica serverdir and start it; returns once it holds
    everything the master holds. A replica at ``version`` that already
    follows its master is left alone.

    On failure the previous data and version come back and the error names
    the step. Nothing is deleted. ``read_outage_seconds`` in the result is the
    time it was down, or 0 with ``reads_elsewhere=True`` (it was drained on a
    front meanwhile, as sentry.upgrade does).

    CLI Example:

    .. code-block:: bash

        salt 'sentry-replica*' sentry_admin.upgrade_replica 6.20.3-1
    """
    master_url = master_url or salt.utils.data.traverse_dict_and_list(__pillar__, "sentry:server:master_url", "")
    if not master_url:
        raise CommandExecutionError("no master_url given and none in pillar sentry:server:master_url")
    before_version = __salt__["pkg.version"](package)
    if not before_version:
        raise CommandExecutionError(f"{package} is not installed: nothing to upgrade (apply the sentry state first)")
    master = _master_status(master_url)
    try:
        current = status()
    except CommandExecutionError:
        current = {"up": False}
    if before_version == version and _follows(current, master):
        return {"changed": False, "role": "replica", "version": {"old": before_version, "new": version}}
    url = _server_url(None)
    steps, state = _Steps(), {"backup": None, "installed": False}
    if before_version != version:
        steps("download")
        _fetch(package, version, refresh)
    down_at = time.monotonic()
    try:
        steps("stop")
        _stop(program)
        steps("install")
        state["installed"] = True
        if before_version != version:
            _install(package, version, refresh=False)
        steps("move data aside")
        state["backup"] = _move_aside(serverdir, "backup")
        steps("initialise")
        initialise(serverdir, master_url=master_url, user=user)
        steps("start server")
        _start(program, url)
        steps("catch up")
        synced = wait_synced(master_url, timeout=sync_timeout)
        down = round(time.monotonic() - down_at, 2)
    except Exception as exc:  # whatever failed, the old replica comes back
        rolled_back = _roll_back(state, before_version, package, serverdir, program, None, url, READY_TIMEOUT)
        raise _give_up("replica", version, steps.current, exc, rolled_back, home) from None
    result = {
        "changed": True,
        "role": "replica",
        "version": {"old": before_version, "new": __salt__["pkg.version"](package)},
        "backup": state["backup"],
        "serial": synced["serial"],
        "down_seconds": down,
        "read_outage_seconds": 0.0 if reads_elsewhere else down,
        "steps": steps.done(),
    }
    _record(result, home)
    return result
