"""Administer sentry's users and indexes on this minion, as root, through the server's HTTP API.

Secrets travel in request bodies, never on a command line, and are never
returned. The server is the instance's own (``sentry_server.settings``):
``instance=PROGRAM`` picks one where a host runs several (otherwise the
pillar's, or the only one), and ``url`` names any other server (it wins over
``instance``). Root's password comes from pillar
``sentry:server:root_password`` unless ``root_password`` is given.

Where the rest went: users' API tokens are ``sentry_tokens``'; the instance itself (settings, status, version, start,
stop) is ``sentry_server``'s; its data (initialise, export, import, backups)
``sentry_data``'s; mending after a killed import or upgrade
``sentry_recover``'s; upgrades ``sentry_upgrade``'s; whether a server holds
what an export holds (the upgrade's health check, devpi-fsck)
``sentry_health``'s; backups and restore drills ``sentry_backup``'s; the
health level of a running instance and its metrics ``sentry_monitor``'s. The
names operators know here (``sentry_admin.token_create``, ``.token_list``,
``.token_delete``, ``.status``, ``.version``,
``.export``, ``.import``, ``.backups``, ``.upgrade``, ``.upgrade_replica``,
``.wait_synced``, ``.last_upgrade``, ``.backup``, ``.verify_backup``,
``.health``) answer, handing over.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import os
from collections.abc import Callable

import salt.utils.args
import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_admin"
__func_alias__ = {"import_": "import"}

SERVER_BIN = "/usr/sbin/sentry-server"


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_admin: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _base(url: str | None, instance: str | None = None) -> str:
    """``url``, or the server of ``instance`` (see sentry_server.settings)."""
    return url.rstrip("/") if url else __salt__["sentry_server.settings"](instance)["url"]


def _request(method: str, url: str, body: dict | None = None, auth: str | None = None) -> tuple[int, dict]:
    return __utils__["sentry_api.request"](method, url, body, auth)


def _check(code: int, body: dict, what: str, ok: tuple[int, ...] = (200, 201)) -> dict:
    return __utils__["sentry_api.check"](code, body, what, ok)


def _root(base: str) -> dict:
    return __utils__["sentry_api.get"](f"{base}/", f"GET {base}/")


def list_users(url: str | None = None, instance: str | None = None) -> list[str]:
    """
    The server's user names.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.list_users
        salt '*' sentry_admin.list_users instance=sentry-b
    """
    return sorted(_root(_base(url, instance)))


def list_indexes(url: str | None = None, user: str | None = None, instance: str | None = None) -> dict:
    """
    The server's indexes as ``{"user/index": {type, bases, volatile, acl_upload}}``,
    optionally of one ``user``.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.list_indexes
        salt '*' sentry_admin.list_indexes user=alice instance=sentry-b
    """
    indexes = {}
    for name, info in _root(_base(url, instance)).items():
        if user and name != user:
            continue
        for index, config in (info.get("indexes") or {}).items():
            indexes[f"{name}/{index}"] = {
                key: config.get(key) for key in ("type", "bases", "volatile", "acl_upload") if key in config
            }
    return indexes


def _index_keys() -> tuple[str, ...]:
    """The index settings the formula knows, as its pillar rules name them (``type`` apart)."""
    return tuple(key for key in __utils__["sentry_pillar.index_keys"]() if key != "type")


def _as_root(url: str | None, root_password: str | None, instance: str | None = None) -> tuple[str, str]:
    """(base URL, root's auth header); the password comes from pillar unless given."""
    base = _base(url, instance)
    password = __utils__["sentry_api.root_password"](root_password, __pillar__)
    return base, __utils__["sentry_api.login"](base, "root", password)


def _check_user_name(name: str) -> str:
    """``name`` if it can be a user name; the server would answer a space or slash with a confusing error."""
    if not isinstance(name, str) or not name or any(char.isspace() or char == "/" for char in name):
        raise CommandExecutionError(f"a user name has no spaces or slashes, got {name!r}")
    return name


def user_get(name: str, url: str | None = None, instance: str | None = None) -> dict | None:
    """
    A user's record (username, email, indexes) or None if there is no such user.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_get alice
        salt '*' sentry_admin.user_get alice instance=sentry-b
    """
    code, body = _request("GET", f"{_base(url, instance)}/{_check_user_name(name)}")
    if code == 404:
        return None
    return _check(code, body, f"reading user {name}", ok=(200,))


def user_password_matches(name: str, password: str, url: str | None = None, instance: str | None = None) -> bool:
    """
    Whether ``password`` logs ``name`` in (how a password is compared without reading it back):
    True, False when the server refuses it (401, 403); any other answer raises.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_password_matches alice '...'
        salt '*' sentry_admin.user_password_matches alice '...' instance=sentry-b
    """
    base = _base(url, instance)
    code, body = _request("POST", f"{base}/+login", {"user": name, "password": password})
    if code not in (200, 401, 403):
        raise CommandExecutionError(f"login as {name} at {base} answered {code}: {body.get('message', body)}")
    return code == 200


def user_set(
    name: str,
    password: str | None = None,
    email: str | None = None,
    url: str | None = None,
    root_password: str | None = None,
    instance: str | None = None,
) -> dict:
    """
    Create the user ``name`` or change its password/email, as root.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_set alice password='...' email=alice@example.org
        salt '*' sentry_admin.user_set alice email=alice@example.org instance=sentry-b
    """
    _check_user_name(name)
    base, auth = _as_root(url, root_password, instance)
    fields = {key: value for key, value in (("password", password), ("email", email)) if value is not None}
    if user_get(name, url=base) is None:
        if "password" not in fields:
            raise CommandExecutionError(f"a new user {name} needs a password")
        _check(*_request("PUT", f"{base}/{name}", fields, auth), f"creating user {name}")
        return {"user": name, "created": True, "changed": sorted(fields)}
    if fields:
        _check(*_request("PATCH", f"{base}/{name}", fields, auth), f"changing user {name}")
    return {"user": name, "created": False, "changed": sorted(fields)}


def user_delete(
    name: str, url: str | None = None, root_password: str | None = None, instance: str | None = None
) -> bool:
    """
    Delete the user ``name`` with its indexes and their files. True if it existed.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.user_delete alice
        salt '*' sentry_admin.user_delete alice instance=sentry-b
    """
    _check_user_name(name)
    base, auth = _as_root(url, root_password, instance)
    if user_get(name, url=base) is None:
        return False
    _check(*_request("DELETE", f"{base}/{name}", auth=auth), f"deleting user {name}")
    return True


def _split_index(name: str) -> tuple[str, str]:
    user, _, index = name.partition("/") if isinstance(name, str) else ("", "", "")
    if not user or not index or "/" in index or any(char.isspace() for char in name):
        raise CommandExecutionError(f"an index is named USER/INDEX, without spaces, got {name!r}")
    return user, index


def index_get(name: str, url: str | None = None, instance: str | None = None) -> dict | None:
    """
    The configuration of index ``user/index``, or None if it does not exist.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_get alice/dev
        salt '*' sentry_admin.index_get alice/dev instance=sentry-b
    """
    user, index = _split_index(name)
    code, body = _request("GET", f"{_base(url, instance)}/{user}/{index}?no_projects=")
    if code == 404:
        return None
    result = _check(code, body, f"reading index {name}", ok=(200,))
    return {key: result[key] for key in ("type", *_index_keys()) if key in result}


def _check_bases(name: str, bases: list[str], url: str | None) -> None:
    """Every base of index ``name`` exists on the server; raises naming the first that does not."""
    for base_index in bases:
        if index_get(base_index, url=url) is None:
            raise CommandExecutionError(
                f"base index {base_index} of {name} does not exist: create it first, or name another in bases"
            )


def index_set(
    name: str, url: str | None = None, root_password: str | None = None, instance: str | None = None, **config
) -> dict:
    """
    Create index ``user/index`` or change its settings (bases, volatile,
    acl_upload, mirror_whitelist; for ``type=mirror`` mirror_url,
    mirror_cache_expiry, mirror_use_external_urls, mirror_no_project_list),
    as root. Bases must exist; the type is set at creation and never changes.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_set alice/dev bases='[root/pypi]' volatile=False
        salt '*' sentry_admin.index_set root/upstream type=mirror mirror_url=https://pypi.example.org/simple/
        salt '*' sentry_admin.index_set alice/dev volatile=True instance=sentry-b
    """
    user, index = _split_index(name)
    known = _index_keys()
    wanted = {key: value for key, value in config.items() if key in known and value is not None}
    kind = config.get("type") or "stage"
    base, auth = _as_root(url, root_password, instance)
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


def index_delete(
    name: str, url: str | None = None, root_password: str | None = None, instance: str | None = None
) -> bool:
    """
    Delete index ``user/index`` with its files. True if it existed.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.index_delete alice/dev
        salt '*' sentry_admin.index_delete alice/dev instance=sentry-b
    """
    user, index = _split_index(name)
    base, auth = _as_root(url, root_password, instance)
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
    instance: str | None = None,
) -> dict:
    """
    Make ``user`` (with ``password``) and its index ``index`` with ``bases``,
    idempotently: what exists and is right stays untouched.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.bootstrap_index alice dev bases=root/pypi password='...'
        salt '*' sentry_admin.bootstrap_index alice dev password='...' instance=sentry-b
    """
    bases = [bases] if isinstance(bases, str) else list(bases)
    name = f"{_check_user_name(user)}/{index}"
    _split_index(name)
    url = _base(url, instance)  # one server for every step below
    # Checked before the user is made: a missing base must leave the server as it was.
    _check_bases(name, bases, url)
    made_user = user_get(user, url=url) is None
    if made_user:
        user_set(user, password=password, email=email, url=url, root_password=root_password)
    result = index_set(
        name, url=url, root_password=root_password, bases=bases, acl_upload=acl_upload, volatile=volatile
    )
    return {"user": user, "user_created": made_user, **result}


# --- handed over: the names operators know ------------------------------------


def _handed_over(target: str) -> Callable:
    def handover(*args, **kwargs):
        return __salt__[target](*args, **salt.utils.args.clean_kwargs(**kwargs))  # without Salt's __pub_*

    handover.__doc__ = f"""
    Handed over to ``{target}``: the same arguments, the same result.

    CLI Example:

    .. code-block:: bash

        salt '*' sys.doc {target}
    """
    return handover


token_create = _handed_over("sentry_tokens.create")
token_list = _handed_over("sentry_tokens.list")
token_delete = _handed_over("sentry_tokens.delete")
status = _handed_over("sentry_server.status")
version = _handed_over("sentry_server.version")
export = _handed_over("sentry_data.export")
import_ = _handed_over("sentry_data.import")
backups = _handed_over("sentry_data.backups")
upgrade = _handed_over("sentry_upgrade.master")
upgrade_replica = _handed_over("sentry_upgrade.replica")
wait_synced = _handed_over("sentry_upgrade.wait_synced")
last_upgrade = _handed_over("sentry_upgrade.last")
backup = _handed_over("sentry_backup.run")
verify_backup = _handed_over("sentry_backup.drill")


def health(instance: str | None = None) -> dict:
    """
    The instance's health level, ok, warn or fatal, with a reason for each
    check that is not ok (``sentry_monitor.health``: server answers, role,
    replica lag and contact with its master, replication errors, event
    processing, free disk, last backup and drill). salt-call exits 0 for ok,
    1 for warn, 2 for fatal.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_admin.health
        salt-call sentry_admin.health instance=sentry-b
    """
    return __salt__["sentry_monitor.health"](instance=instance)
