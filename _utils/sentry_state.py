"""What the sentry_user and sentry_index states share: failures, dry runs and the absent pattern.

Reached from the state modules as ``__utils__["sentry_state.failed"]`` and
friends. Utils reach the execution modules through ``__salt__`` (Salt packs it
for them) but not the states' ``__context__`` or ``__pillar__``: the states
pass them. A run's ``__context__`` carries what a dry run plans for the states
after: sentry_program the (re)starts, sentry_user.root_password root's new
password.

A dry run (``test=True``) says what the real run would do, failures included.
Its result is None for a change to come, or for a failure that only says the
host is still being deployed: what the state needs comes with this very run.
"""

from __future__ import annotations

from collections.abc import Callable

import salt.utils.data
from salt.exceptions import CommandExecutionError

PLANNED_STARTS = "sentry_program.planned_starts"  # in __context__: programs a dry run would (re)start
ROOT_PLANNED = "sentry_user.root_password_planned"  # in __context__: a dry run would set root's password first


def plan_start(context: dict, name: str) -> None:
    """Record in a run's ``context`` that a dry run would (re)start the program ``name``."""
    context[PLANNED_STARTS] = context.get(PLANNED_STARTS, set()) | {name}


def plan_root_password(context: dict) -> None:
    """Record that a dry run would set root's password: the states after it would log in with the new one."""
    context[ROOT_PLANNED] = True


def _start_planned(context: dict) -> bool:
    return bool(context.get(PLANNED_STARTS))


def _root_planned(context: dict) -> bool:
    return bool(context.get(ROOT_PLANNED))


def pillar_secret(pillar: dict, key: str | None) -> str | None:
    """The value at pillar ``key`` (colon-separated), None when there is no key, no value or an empty one."""
    if not key:
        return None
    return salt.utils.data.traverse_dict_and_list(pillar, key, None) or None


def _installed() -> bool:
    """Whether the sentry package is installed: the sentry_server module loads only then."""
    return "sentry_server.answers" in __salt__


def _answers(url: str | None) -> bool:
    """Whether the server at ``url`` answers its API now."""
    return __salt__["sentry_server.answers"](url=url)


def failed(ret: dict, exc: Exception, test: bool, context: dict, url: str | None) -> dict:
    """
    The state's return for ``exc``: result False, or None in a dry run where the
    real run would first bring what the state needs: the sentry package (no
    sentry_admin module yet), or a server that does not answer yet and that this
    run would (re)start (sentry_program said so in the run's ``context``). Anything
    else fails the dry run as it would fail the real one: a server that should
    run and does not answer, wrong credentials, an error the server answers
    with, bad input.
    """
    if not _installed():
        if test:
            comment = f"{ret['name']} would be set up once the sentry package is installed"
            return {**ret, "result": None, "comment": comment}
        exc = f"the sentry_admin module is not available (is the sentry package installed?): {exc}"
    elif test and _start_planned(context) and not _answers(url):
        comment = f"{ret['name']} would be set up once this run has started sentry ({exc})"
        return {**ret, "result": None, "comment": comment}
    return {**ret, "changes": {}, "result": False, "comment": str(exc)}


def check_root(pillar: dict, key: str, url: str | None, context: dict) -> None:
    """
    Raise what a change as root would fail with at ``url``, changing nothing:
    no password at pillar ``key``, or one root cannot log in with unless this
    run sets it first (sentry_user.root_password said so in ``context``). A dry
    run checks this where the real run would log in.
    """
    password = pillar_secret(pillar, key)
    if not password:
        raise CommandExecutionError(f"no root password: set pillar {key}")
    if not _root_planned(context) and not __salt__["sentry_admin.user_password_matches"]("root", password, url=url):
        raise CommandExecutionError(
            f"login as root at {url or 'the server'} failed: pillar {key} does not hold root's password"
        )


def absent(
    kind: str,
    name: str,
    get: Callable[[], dict | None],
    delete: Callable[[], object],
    *,
    test: bool,
    pillar: dict,
    root_key: str,
    context: dict,
    url: str | None,
) -> dict:
    """
    Ensure the ``kind`` (user, index) ``name`` is gone: ``get`` reads it,
    ``delete`` removes it as root (whose password is at pillar ``root_key``);
    see ``failed`` and ``check_root`` for what ``context`` holds.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{kind} {name} does not exist"}
    try:
        if get() is None:
            return ret
        ret["changes"] = {kind: {"old": name, "new": None}}
        if test:
            check_root(pillar, root_key, url, context)
            return {**ret, "result": None, "comment": f"{kind} {name} would be deleted"}
        delete()
    except (CommandExecutionError, KeyError) as exc:
        return failed(ret, exc, test, context, url)
    ret["comment"] = f"{kind} {name} deleted"
    return ret
