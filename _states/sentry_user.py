"""Users of a sentry server, declared.

.. code-block:: yaml

    sentry-user-alice:
      sentry_user.present:
        - name: alice
        - email: alice@example.org
        - password_pillar: sentry:bootstrap:users:alice:password

The password is read from pillar by the state: it never appears in the
rendered SLS, the state's arguments or its output. So is root's, which
changes are made with (``root_password_pillar``); a dry run checks that root
can log in with it. ``root_password`` keeps root's password the one pillar
holds:

.. code-block:: yaml

    sentry-root-password:
      sentry_user.root_password:
        - password_pillar: sentry:server:root_password
"""

from __future__ import annotations

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_user"

ROOT_PILLAR = "sentry:server:root_password"  # where root's password is read from


def __virtual__():
    return __virtualname__


def _failed(ret: dict, exc: Exception, url: str | None) -> dict:
    return __utils__["sentry_state.failed"](ret, exc, __opts__["test"], __context__, url)


def _password(pillar_key: str | None) -> str | None:
    return __utils__["sentry_state.pillar_secret"](__pillar__, pillar_key)


def present(
    name: str,
    password_pillar: str | None = None,
    email: str | None = None,
    url: str | None = None,
    root_password_pillar: str = ROOT_PILLAR,
) -> dict:
    """
    Ensure the user ``name`` exists with the password found at ``password_pillar`` and ``email``.

    Changes are made as root, with the password found at ``root_password_pillar``.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"user {name} is as declared"}
    password = _password(password_pillar)
    try:
        current = __salt__["sentry_admin.user_get"](name, url=url)
        if current is None:
            if not password:
                return {
                    **ret,
                    "result": False,
                    "comment": f"a new user {name} needs a password (pillar {password_pillar})",
                }
            ret["changes"] = {"user": {"old": None, "new": name}}
            if email:
                ret["changes"]["email"] = {"old": None, "new": email}
        else:
            if email is not None and current.get("email") != email:
                ret["changes"]["email"] = {"old": current.get("email"), "new": email}
            if password and not __salt__["sentry_admin.user_password_matches"](name, password, url=url):
                ret["changes"]["password"] = {"old": "<hidden>", "new": "<hidden>"}
        if not ret["changes"]:
            return ret
        if __opts__["test"]:
            __utils__["sentry_state.check_root"](__pillar__, root_password_pillar, url, __context__)
            return {
                **ret,
                "result": None,
                "comment": f"user {name} would be {'created' if current is None else 'changed'}",
            }
        __salt__["sentry_admin.user_set"](
            name,
            password=password if (current is None or "password" in ret["changes"]) else None,
            email=email,
            url=url,
            root_password=_password(root_password_pillar),
        )
    except (CommandExecutionError, KeyError) as exc:
        return _failed(ret, exc, url)
    ret["comment"] = f"user {name} {'created' if current is None else 'changed'}"
    return ret


def root_password(
    name: str = "root", password_pillar: str = ROOT_PILLAR, url: str | None = None, instance: str | None = None
) -> dict:
    """
    Ensure root logs in with the password found at ``password_pillar``: a new
    one there is set on the server, which no longer takes the old one.

    Over the API a password is changed by its owner, who would need the old
    one; so a new password in pillar is set in the serverdir itself
    (``sentry_data.set_password``), with the server stopped for the few
    seconds that takes. On a master: replicas copy root from it. The password
    never appears in the state's arguments, output or logs.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{name} logs in with pillar {password_pillar}"}
    password = _password(password_pillar)
    if not password:
        return {**ret, "result": False, "comment": f"no password for {name}: set pillar {password_pillar}"}
    try:
        if __salt__["sentry_admin.user_password_matches"](name, password, url=url):
            return ret
        ret["changes"] = {"password": {"old": "<hidden>", "new": "<hidden>"}}
        if __opts__["test"]:
            __utils__["sentry_state.plan_root_password"](__context__)
            return {
                **ret,
                "result": None,
                "comment": f"{name}'s password would be set from pillar {password_pillar}"
                " (the server stops for a few seconds)",
            }
        done = __salt__["sentry_data.set_password"](name, password, instance=instance)
        if not __salt__["sentry_admin.user_password_matches"](name, password, url=url):
            raise CommandExecutionError(f"{name}'s password was set, yet the server refuses pillar {password_pillar}")
    except (CommandExecutionError, KeyError) as exc:
        return _failed(ret, exc, url)
    ret["comment"] = (
        f"{name}'s password set from pillar {password_pillar}; the old one is refused"
        f" (the server was stopped {done['seconds_stopped']} s)"
    )
    return ret


def absent(name: str, url: str | None = None, root_password_pillar: str = ROOT_PILLAR) -> dict:
    """
    Ensure the user ``name`` does not exist (its indexes and files go with it).

    It is deleted as root, with the password found at ``root_password_pillar``.
    """
    root_password = _password(root_password_pillar)
    return __utils__["sentry_state.absent"](
        "user",
        name,
        lambda: __salt__["sentry_admin.user_get"](name, url=url),
        lambda: __salt__["sentry_admin.user_delete"](name, url=url, root_password=root_password),
        test=__opts__["test"],
        pillar=__pillar__,
        root_key=root_password_pillar,
        context=__context__,
        url=url,
    )
