"""Users' API tokens (devpi-tokens, carried by the deb) on this minion, as root, through the server's HTTP API.

A token made by ``create`` goes to a file only root reads, never to the
output or a command line; ``list`` and ``delete`` name tokens by id. With
``server:restrict_modify`` at its default, users may not make their own. The
server is the instance's own (``sentry_server.settings``): ``instance=PROGRAM``
picks one where a host runs several, and ``url`` names any other server.
Root's password comes from pillar ``sentry:server:root_password`` unless
``root_password`` is given. ``sentry_admin.token_create``, ``.token_list``
and ``.token_delete`` answer too.

:depends: the ``sentry`` Debian package
"""

from __future__ import annotations

import os
import re
import time

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_tokens"
__func_alias__ = {"list_": "list"}

SERVER_BIN = "/usr/sbin/sentry-server"
# Permissions a token may be limited to (devpi-server's; devpi-tokens refuses others).
PERMISSIONS = ("del_entry", "del_project", "del_verdata", "index_create", "index_delete", "index_modify",
               "pkg_read", "toxresult_upload", "upload", "user_create", "user_delete", "user_login",
               "user_modify")  # fmt: skip
EXPIRY_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_tokens: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _request(method: str, url: str, body: dict | None = None, auth: str | None = None) -> tuple[int, dict]:
    return __utils__["sentry_api.request"](method, url, body, auth)


def _check(code: int, body: dict, what: str, ok: tuple[int, ...] = (200, 201)) -> dict:
    return __utils__["sentry_api.check"](code, body, what, ok)


def _words(value: str | list[str] | None, what: str) -> list[str]:
    """A comma-separated string or a list, as a sorted list without blanks."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise CommandExecutionError(f"{what} is a comma-separated string or a list of names, got {value!r}")
    return sorted({item.strip() for item in items if item.strip()})


def _expires_at(expires: str | int) -> int:
    """The Unix time ``expires`` ('90d', '12h', '30m', '3600s' or seconds) from now."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(expires))
    if not match or int(match.group(1)) == 0:
        raise CommandExecutionError(
            f"expires is a time from now such as 30d, 12h, 45m or 3600 (seconds), got {expires!r}"
        )
    return int(time.time()) + int(match.group(1)) * EXPIRY_UNITS[match.group(2) or "s"]


def _token_user_url(name: str, url: str | None, root_password: str | None, instance: str | None) -> tuple[str, str]:
    """(the user's URL, root's auth header), after checking the user exists."""
    base = url.rstrip("/") if url else __salt__["sentry_server.settings"](instance)["url"]
    password = __utils__["sentry_api.root_password"](root_password, __pillar__)
    if __salt__["sentry_admin.user_get"](name, url=base) is None:  # which checks the name, too
        raise CommandExecutionError(f"no user {name} at {base}")
    return f"{base}/{name}", __utils__["sentry_api.login"](base, "root", password)


def _tokens(user_url: str, auth: str) -> dict:
    """id -> limits of the tokens of the user at ``user_url`` (devpi-tokens' +tokens)."""
    body = _check(*_request("GET", f"{user_url}/+tokens", auth=auth), f"listing the tokens at {user_url}", ok=(200,))
    return {token_id: info.get("restrictions", []) for token_id, info in body["tokens"].items()}


def _write_secret(path: str, text: str) -> None:
    """Write ``text`` to ``path``, readable by root only from its first byte on."""
    temporary = f"{path}.new"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with salt.utils.files.fopen(descriptor, "w") as handle:
        handle.write(text + "\n")
    os.replace(temporary, path)


def create(
    user: str,
    path: str,
    indexes: str | list[str] | None = None,
    allowed: str | list[str] | None = None,
    expires: str | int = "30d",
    projects: str | list[str] | None = None,
    url: str | None = None,
    root_password: str | None = None,
    instance: str | None = None,
) -> dict:
    """
    Make a token of ``user`` and write it to ``path`` (mode 0600); returns its id and limits, not the token.

    indexes
        user/index names it may be used on (all of the user's rights if none)
    allowed
        permissions it may use, e.g. ``pkg_read`` or ``upload,pkg_read``
    expires
        how long it works: ``30d`` (the default), ``12h``, ``45m`` or seconds
    projects
        project names it may be used for

    A CI job then installs with ``https://USER:TOKEN@HOST/INDEX/+simple/`` and
    uploads after ``sentry token-login -f FILE``.

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_tokens.create ci /root/ci.token indexes=team/dev allowed=upload,pkg_read
        salt sentry-master sentry_tokens.create ci /root/ci-b.token expires=12h instance=sentry-b
    """
    limits: dict = {"expires": _expires_at(expires)}
    if index_names := _words(indexes, "indexes"):
        if bad := [name for name in index_names if name.count("/") != 1]:
            raise CommandExecutionError(f"indexes are user/index names, got {', '.join(bad)}")
        limits["indexes"] = index_names
    if permissions := _words(allowed, "allowed"):
        if unknown := [name for name in permissions if name not in PERMISSIONS]:
            raise CommandExecutionError(f"unknown permission(s) {', '.join(unknown)}; known: {', '.join(PERMISSIONS)}")
        limits["allowed"] = permissions
    if project_names := _words(projects, "projects"):
        limits["projects"] = project_names
    if not (os.path.isabs(path) and os.path.isdir(os.path.dirname(path))):
        raise CommandExecutionError(f"path must be an absolute path in an existing directory, got {path!r}")
    user_url, auth = _token_user_url(user, url, root_password, instance)
    before = set(_tokens(user_url, auth))
    body = _check(*_request("POST", f"{user_url}/+token-create", limits, auth), f"making a token of {user}", ok=(200,))
    _write_secret(path, body["token"])
    made = set(_tokens(user_url, auth)) - before
    return {"user": user, "id": made.pop() if len(made) == 1 else None, "path": path, **limits}


def list_(user: str, url: str | None = None, root_password: str | None = None, instance: str | None = None) -> dict:
    """
    The tokens of ``user``: id -> their limits (never the tokens themselves).

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_tokens.list ci
        salt sentry-master sentry_tokens.list ci instance=sentry-b
    """
    return _tokens(*_token_user_url(user, url, root_password, instance))


def delete(
    user: str, token_id: str, url: str | None = None, root_password: str | None = None, instance: str | None = None
) -> bool:
    """
    Revoke the token ``token_id`` of ``user`` (and the tokens derived from it). True if it existed.

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_tokens.delete ci 8c1d2e3f
        salt sentry-master sentry_tokens.delete ci 8c1d2e3f instance=sentry-b
    """
    user_url, auth = _token_user_url(user, url, root_password, instance)
    if token_id not in _tokens(user_url, auth):
        return False
    _check(*_request("DELETE", f"{user_url}/+tokens/{token_id}", auth=auth), f"revoking token {token_id} of {user}")
    return True
