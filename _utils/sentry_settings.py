"""Where an instance of sentry lives on this minion, as the formula rendered it.

sentry.server writes ``/etc/sentry/instances/<program>.json`` (no secrets):
serverdir, program, user, group, home, package, the server's URL, the nginx
service, supervisor's socket. The modules read it here, so an instance with
another program name, serverdir or port is handled as deployed, and nothing
repeats defaults.yaml. Reached as ``__utils__["sentry_settings.load"]``.
"""

from __future__ import annotations

import json
import os

from salt.exceptions import CommandExecutionError

INSTANCES_DIR = "/etc/sentry/instances"
KEYS = (
    "program",
    "serverdir",
    "backup_dir",
    "user",
    "group",
    "home",
    "package",
    "url",
    "master_url",
    "role",
    "nginx_service",
    "supervisor_socket",
    "ready_timeout",
)


def deployed() -> list[str]:
    """The instances (program names) the formula deployed here."""
    try:
        names = os.listdir(INSTANCES_DIR)
    except FileNotFoundError:
        return []
    return sorted(name[: -len(".json")] for name in names if name.endswith(".json"))


def choose(instance: str | None, pillar_program: str | None, known: list[str]) -> str:
    """Which instance a call is about: the one named, else the pillar's, else the only one."""
    if not known:
        raise CommandExecutionError(
            f"no sentry instance is deployed on this minion ({INSTANCES_DIR} is empty): apply the sentry state first"
        )
    if instance:
        if instance not in known:
            raise CommandExecutionError(f"no sentry instance {instance!r} here; deployed: {', '.join(known)}")
        return instance
    if pillar_program in known:
        return pillar_program
    if len(known) == 1:
        return known[0]
    raise CommandExecutionError(f"several sentry instances here ({', '.join(known)}): name one with instance=PROGRAM")


def load(instance: str | None = None, pillar_program: str | None = None) -> dict:
    """The settings of ``instance`` (see ``choose``); raises naming what is missing."""
    name = choose(instance, pillar_program, deployed())
    path = os.path.join(INSTANCES_DIR, f"{name}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"{path} is unreadable ({exc}): apply the sentry state again") from None
    missing = [key for key in KEYS if key not in settings]
    if missing:
        raise CommandExecutionError(f"{path} lacks {', '.join(missing)}: apply the sentry state again")
    return settings
