"""How an upgrade goes: in place when the new server runs on the old serverdir, else by export and import.

devpi-server refuses a serverdir whose ``.serverversion`` (its first
dot-separated field) differs from its ``DATABASE_VERSION``
(``check_compatible_version`` in devpi_server/main.py); between releases of
one database version the new code runs on the old data. The sentry deb says
its database version in its control field ``X-Sentry-Database-Version``
(packaging/debian/rules); a deb built before that field is read from its
devpi_server/main.py instead (``database_version_in_source``).

Pure functions and file reads only (no Salt functions, no dunders), reached
as ``__utils__["sentry_method.choose"]`` and friends.
"""

from __future__ import annotations

import os
import re

IN_PLACE = "in_place"
EXPORT_IMPORT = "export_import"
# What sentry:upgrade:method may say (map.jinja checks it): auto decides from the facts, export forces
# export/import.
FORCIBLE = ("auto", "export")
SERVER_VERSION_FILE = ".serverversion"
_DATABASE_VERSION = re.compile(r"""^DATABASE_VERSION\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def database_version_in_source(main_py: str) -> str | None:
    """``DATABASE_VERSION`` as devpi_server/main.py's text assigns it, or None."""
    found = _DATABASE_VERSION.search(main_py)
    return found.group(1) if found else None


def serverdir_database_version(serverdir: str) -> str | None:
    """The database version the data in ``serverdir`` was written with (``.serverversion``'s first field,
    as devpi-server compares it), or None when the file is missing or empty."""
    try:
        with open(os.path.join(serverdir, SERVER_VERSION_FILE), encoding="utf-8") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    return text.split(".")[0] or None


def _against_in_place(forced: str, serverdir_version: str | None, target_version: str | None, follows: str) -> str:
    """Why an upgrade cannot go in place, or "" when it can."""
    if forced == "export":
        return "sentry:upgrade:method is export"
    if follows:
        return follows
    if not serverdir_version:
        return f"the serverdir's database version is unknown (no {SERVER_VERSION_FILE})"
    if not target_version:
        return "the new package's database version is unknown"
    if serverdir_version != target_version:
        return f"database version {serverdir_version} on disk, {target_version} in the new package"
    return ""


def choose(
    forced: str,
    serverdir_version: str | None,
    target_version: str | None,
    follows: str = "",
    otherwise: str = EXPORT_IMPORT,
) -> dict:
    """The method of an upgrade and why: ``{"method": "in_place" | otherwise, "why": ...,
    "serverdir_database_version": ..., "target_database_version": ...}``.

    ``forced`` is sentry:upgrade:method (see FORCIBLE); an unknown database version on either side never
    goes in place. A replica passes ``otherwise="remake"`` and, when it does not follow its master as it
    is now (the master was imported afresh), why not in ``follows``.
    """
    if forced not in FORCIBLE:
        raise ValueError(f"upgrade method must be one of {', '.join(FORCIBLE)}, got {forced!r}")
    facts = {"serverdir_database_version": serverdir_version, "target_database_version": target_version}
    against = _against_in_place(forced, serverdir_version, target_version, follows)
    if against:
        return {"method": otherwise, "why": against, **facts}
    why = f"database version {serverdir_version} on disk and in the new package"
    return {"method": IN_PLACE, "why": why, **facts}


def cached_deb(archives: str, package: str, version: str, names: list[str]) -> str | None:
    """The deb of ``package`` ``version`` among ``names`` (apt's cache ``archives``), as apt names it
    (an epoch's colon written %3a), or None."""
    prefix = f"{package}_{version.replace(':', '%3a')}_"
    found = sorted(name for name in names if name.startswith(prefix) and name.endswith(".deb"))
    return os.path.join(archives, found[0]) if found else None
