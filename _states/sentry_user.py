"""Users of a sentry server, declared.

.. code-block:: yaml

    sentry-user-alice:
      sentry_user.present:
        - name: alice
        - email: alice@example.org
        - password_pillar: sentry:bootstrap:users:alice:password

The password is read from pillar by the state: it never appears in the
rendered SLS, the state's arguments or its output.
"""

from __future__ import annotations

import salt.utils.data
from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_user"


def __virtual__():
    return __virtualname__


def _failed(ret: dict, exc: Exception) -> dict:
    return __utils__["sentry_state.failed"](ret, exc, __opts__["test"])


def _password(pillar_key: str | None) -> str | None:
    if not pillar_key:
        return None
    return salt.utils.data.traverse_dict_and_list(__pillar__, pillar_key, None) or None


def present(name: str, password_pillar: str | None = None, email: str | None = None, url: str | None = None) -> dict:
    """
    Ensure the user ``name`` exists with the password found at ``password_pillar`` and ``email``.
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
        )
    except (CommandExecutionError, KeyError) as exc:
        return _failed(ret, exc)
    ret["comment"] = f"user {name} {'created' if current is None else 'changed'}"
    return ret


def absent(name: str, url: str | None = None) -> dict:
    """
    Ensure the user ``name`` does not exist (its indexes and files go with it).
    """
    return __utils__["sentry_state.absent"](
        "user",
        name,
        lambda: __salt__["sentry_admin.user_get"](name, url=url),
        lambda: __salt__["sentry_admin.user_delete"](name, url=url),
        __opts__["test"],
    )
