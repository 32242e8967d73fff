"""What the sentry_user and sentry_index states share: failures, dry runs and the absent pattern.

Reached from the state modules as ``__utils__["sentry_state.failed"]`` and
friends. Utils reach the execution modules through ``__salt__`` (Salt packs it
for them) but not the states' ``__context__`` or ``__pillar__``: the states
pass what they read there.

A dry run (``test=True``) says what the real run would do, failures included.
Its result is None for a change to come, or for a failure that only says the
host is still being deployed: what the state needs comes with this very run.
"""

from __future__ import annotations

from collections.abc import Callable

from salt.exceptions import CommandExecutionError


def _installed() -> bool:
    """Whether the sentry package is installed: the sentry_server module loads only then."""
    return "sentry_server.answers" in __salt__


def _answers(url: str | None) -> bool:
    """Whether the server at ``url`` answers its API now."""
    return __salt__["sentry_server.answers"](url=url)


def failed(ret: dict, exc: Exception, test: bool, start_planned: bool, url: str | None) -> dict:
    """
    The state's return for ``exc``: result False, or None in a dry run where the
    real run would first bring what the state needs: the sentry package (no
    sentry_admin module yet), or a server that does not answer yet and that this
    run would (re)start (``start_planned``: sentry_program said so). Anything
    else fails the dry run as it would fail the real one: a server that should
    run and does not answer, wrong credentials, an error the server answers
    with, bad input.
    """
    if not _installed():
        if test:
            comment = f"{ret['name']} would be set up once the sentry package is installed"
            return {**ret, "result": None, "comment": comment}
        exc = f"the sentry_admin module is not available (is the sentry package installed?): {exc}"
    elif test and start_planned and not _answers(url):
        comment = f"{ret['name']} would be set up once this run has started sentry ({exc})"
        return {**ret, "result": None, "comment": comment}
    return {**ret, "changes": {}, "result": False, "comment": str(exc)}


def check_root(password: str | None, key: str, url: str | None, planned: bool = False) -> None:
    """
    Raise what a change as root would fail with at ``url``, changing nothing:
    no ``password`` (read from pillar ``key``), or one root cannot log in with
    unless this run sets it first (``planned``: sentry_user.root_password said
    so). A dry run checks this where the real run would log in.
    """
    if not password:
        raise CommandExecutionError(f"no root password: set pillar {key}")
    if not planned and not __salt__["sentry_admin.user_password_matches"]("root", password, url=url):
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
    root_password: str | None,
    root_key: str,
    start_planned: bool,
    url: str | None,
    root_planned: bool = False,
) -> dict:
    """
    Ensure the ``kind`` (user, index) ``name`` is gone: ``get`` reads it,
    ``delete`` removes it as root (whose password is ``root_password``, read
    from pillar ``root_key``); see ``failed`` for ``start_planned``, ``check_root``
    for ``root_planned``.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{kind} {name} does not exist"}
    try:
        if get() is None:
            return ret
        ret["changes"] = {kind: {"old": name, "new": None}}
        if test:
            check_root(root_password, root_key, url, root_planned)
            return {**ret, "result": None, "comment": f"{kind} {name} would be deleted"}
        delete()
    except (CommandExecutionError, KeyError) as exc:
        return failed(ret, exc, test, start_planned, url)
    ret["comment"] = f"{kind} {name} deleted"
    return ret
