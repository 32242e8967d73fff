"""One-time set-up of a sentry serverdir: the shared secret and the initialisation.

.. code-block:: yaml

    sentry-server-initialised:
      sentry_server.initialised:
        - name: /var/lib/sentry/data
        - root_password_pillar: sentry:server:root_password

The root password is read from pillar here, so it never appears in the
rendered SLS, the state's arguments or its output.
"""

from __future__ import annotations

import os

import salt.utils.data
from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_server"


def __virtual__():
    return __virtualname__


def _data(function: str):
    """The sentry_data function, or None while the sentry package is not installed (test mode)."""
    return __salt__.get(f"sentry_data.{function}")


def secret_present(name: str, user: str = "sentry") -> dict:
    """
    Ensure the shared secret file ``name`` exists (made once with devpi-gen-secret, 0600).
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{name} exists"}
    if os.path.exists(name):
        return ret
    ret["changes"] = {"secretfile": {"old": None, "new": name}}
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be generated"}
    generate = _data("gen_secret")
    if generate is None:
        return {**ret, "changes": {}, "result": False, "comment": "the sentry package is not installed"}
    try:
        generate(name, user=user)
    except CommandExecutionError as exc:
        return {**ret, "changes": {}, "result": False, "comment": str(exc)}
    ret["comment"] = f"{name} generated"
    return ret


def not_interrupted(name: str) -> dict:
    """
    Succeed, changing nothing, unless an import or upgrade of the serverdir
    ``name`` is running or has died there: its trail
    ``<serverdir>.operation.json`` exists. Then fail, saying where the data is
    and what to run. The states that install the package, initialise the
    serverdir, start the server or start nginx require this one (see
    sentry/server/guard.sls), so an apply never upgrades, serves or
    initialises over data an interrupted operation set aside.

    .. code-block:: yaml

        sentry-server-no-interrupted-operation:
          sentry_server.not_interrupted:
            - name: /var/lib/sentry/data
    """
    journal = __utils__["sentry_journal.read"](name)
    if journal is not None:
        return {"name": name, "changes": {}, "result": False, "comment": _interrupted(name, journal)}
    return {"name": name, "changes": {}, "result": True, "comment": f"no import or upgrade of {name} is pending"}


def initialised(
    name: str,
    root_password_pillar: str | None = None,
    master_url: str | None = None,
    no_root_pypi: bool = False,
    user: str = "sentry",
) -> dict:
    """
    Ensure the serverdir ``name`` is initialised: as a master with the root
    password found at ``root_password_pillar``, or as a replica of
    ``master_url``. Never re-initialises. Fails, touching nothing, while an
    import or upgrade is running on it or has died there (its trail
    ``<serverdir>.operation.json``): the states that start the server
    require this one.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"{name} is initialised"}
    journal = __utils__["sentry_journal.read"](name)
    if journal is not None:  # never start, let alone initialise, over what an import or upgrade left
        return {**ret, "result": False, "comment": _interrupted(name, journal)}
    if os.path.exists(os.path.join(name, ".nodeinfo")):
        return ret
    role = "replica" if master_url else "master"
    # Straight from the pillar: pillar.get masks secrets in Salt 3008 (and has no 'unmask' before).
    password = None if master_url else salt.utils.data.traverse_dict_and_list(__pillar__, root_password_pillar, "")
    if not master_url and not password:
        return {**ret, "result": False, "comment": f"pillar {root_password_pillar} is empty"}
    ret["changes"] = {"initialised": {"old": None, "new": role}}
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{name} would be initialised as a {role}"}
    initialise = _data("initialise")
    if initialise is None:
        return {**ret, "changes": {}, "result": False, "comment": "the sentry package is not installed"}
    try:
        initialise(name, root_password=password, master_url=master_url, no_root_pypi=no_root_pypi, user=user)
    except CommandExecutionError as exc:
        return {**ret, "changes": {}, "result": False, "comment": str(exc)}
    ret["comment"] = f"{name} initialised as a {role}"
    return ret


def _interrupted(name: str, journal: dict) -> str:
    what = __utils__["sentry_journal.describe"](journal)
    if __utils__["sentry_journal.alive"](journal):
        return f"{name}: {what} is still running (pid {journal['pid']}); apply again once it has ended"
    return (
        f"{name}: {what}. Nothing was started or initialised over it. Run 'salt-call sentry_data.recover' "
        f"(it puts the data back, or completes an upgrade that had passed its health check), then apply again"
    )
