"""The formula's settings as its states see them: defaults.yaml under pillar ``sentry``, checked, with what
derives from them (the rules: ``_utils/sentry_pillar.py``; what derives: ``_utils/sentry_derived.py``).

``sentry/map.jinja`` calls ``settings`` once per sls it renders: a bad pillar
fails the render with the key's name, before any state runs.
"""

from __future__ import annotations

import salt.utils.yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_pillar"


def __virtual__():
    return __virtualname__


def settings(defaults: dict | None = None, tplroot: str = "sentry") -> dict:
    """
    Pillar ``sentry`` laid over ``defaults`` (defaults.yaml's ``sentry``; by default read from
    ``salt://<tplroot>/defaults.yaml``), checked, with ``derived`` added: what the formula will deploy here.
    Like ``pillar.get sentry``, it holds the pillar's secrets.

    Fails naming the first bad key (``sentry pillar: ...``).

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_pillar.settings
    """
    if defaults is None:
        text = __salt__["cp.get_file_str"](f"salt://{tplroot}/defaults.yaml")
        if not text:
            raise CommandExecutionError(f"no salt://{tplroot}/defaults.yaml: is the formula in the file roots?")
        defaults = salt.utils.yaml.safe_load(text)["sentry"]
    try:
        sentry = __utils__["sentry_pillar.checked"](
            defaults,
            __pillar__.get("sentry", {}),
            has_ipv6=bool(__grains__.get("ipv6")),
            file_exists=__salt__["file.file_exists"],
        )
    except ValueError as exc:  # PillarError: the message names the key
        raise CommandExecutionError(str(exc)) from None
    sentry["derived"] = __utils__["sentry_derived.derive"](
        sentry,
        tplroot=tplroot,
        python_executable=__grains__.get("pythonexecutable", "/nonexistent/python"),
        conf_file=__opts__.get("conf_file") or "/etc/salt/minion",
        file_exists=__salt__["file.file_exists"],
    )
    return sentry


def without_secrets(settings_: dict) -> dict:
    """
    What templates get: ``settings_`` with root's password, the replication secret and the LDAP bind password
    blanked.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_pillar.without_secrets '{"server": {}, "auth": {"ldap": {}}}'
    """
    return __utils__["sentry_derived.without_secrets"](settings_)
