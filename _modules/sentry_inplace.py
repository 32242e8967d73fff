"""Which way an upgrade of a sentry instance goes, from facts: in place, or by export and import.

In place when the new package's devpi-server runs on the serverdir as it is
(the deb's database version equals the serverdir's ``.serverversion``), by
export and import otherwise or when ``method=export`` forces it. The choice
itself is ``_utils/sentry_method.py``; this module reads the facts on the
minion: the serverdir, and the deb (its ``X-Sentry-Database-Version`` control
field; for a deb built before the field, ``DATABASE_VERSION`` in its
devpi_server/main.py). ``sentry_upgrade`` asks ``method`` once the deb is
downloaded; the orchestration's plan asks it before anything is (apt's
package index carries the control field).

:depends: the ``sentry`` Debian package, dpkg-deb
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import urllib.parse

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_inplace"

SERVER_BIN = "/usr/sbin/sentry-server"
APT_ARCHIVES = "/var/cache/apt/archives"
MAIN_PY = "/site-packages/devpi_server/main.py"
CONTROL_FIELD = "X-Sentry-Database-Version"  # written by packaging/debian/rules


def __virtual__():
    if not os.path.exists(SERVER_BIN):
        return (False, f"sentry_inplace: the sentry package is not installed ({SERVER_BIN} is missing)")
    return __virtualname__


def _run(args: list[str]) -> dict:
    return __salt__["cmd.run_all"](args, python_shell=False, output_loglevel="quiet", ignore_retcode=True)


def _control_field(deb: str) -> str | None:
    result = _run(["dpkg-deb", "-f", deb, CONTROL_FIELD])
    if result["retcode"] != 0:
        raise CommandExecutionError(f"dpkg-deb cannot read {deb}: {result['stderr'].strip()}")
    return result["stdout"].strip() or None


def _version_in_source(deb: str) -> str | None:
    """DATABASE_VERSION from the deb's devpi_server/main.py, streamed out of its data archive (a binary
    pipe, which cmd.run_all does not carry: subprocess, argv only)."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE) as unpack:
        try:
            with tarfile.open(fileobj=unpack.stdout, mode="r|") as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(MAIN_PY):
                        text = archive.extractfile(member).read().decode("utf-8", "replace")
                        return __utils__["sentry_method.database_version_in_source"](text)
        finally:
            unpack.stdout.close()
            unpack.kill()
    return None


def database_version(deb: str) -> str | None:
    """
    The devpi database version of the server in the sentry deb at ``deb``:
    its ``X-Sentry-Database-Version`` control field, or for a deb built
    before the field, ``DATABASE_VERSION`` in its devpi_server/main.py; None
    when neither says.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_inplace.database_version /var/cache/apt/archives/sentry_6.20.3-1_amd64.deb
    """
    if not os.path.isfile(deb):
        raise CommandExecutionError(f"no such deb: {deb}")
    return _control_field(deb) or _version_in_source(deb)


def _indexed_version(package: str, version: str) -> str | None:
    """The control field as apt's package index lists it for ``package=version`` (no download)."""
    result = _run(["apt-cache", "show", f"{package}={version}"])
    field = CONTROL_FIELD.lower() + ":"
    for line in result["stdout"].splitlines() if result["retcode"] == 0 else []:
        if line.lower().startswith(field):
            return line.split(":", 1)[1].strip() or None
    return None


def _local_deb(package: str, version: str) -> str | None:
    """The deb apt would install from a local (``file:``) repository, which apt reads in place rather than
    copying into its cache: the ``file:`` URI ``apt-get --print-uris`` names."""
    result = _run(["apt-get", "install", "-qq", "--print-uris", "--allow-downgrades", f"{package}={version}"])
    for line in result["stdout"].splitlines() if result["retcode"] == 0 else []:
        uri = line.split(" ", 1)[0].strip("'")
        if uri.startswith("file:") and uri.endswith(".deb"):
            return urllib.parse.unquote(uri.removeprefix("file:"))
    return None


def target_version(package: str, version: str) -> tuple[str | None, str]:
    """The database version of ``package`` ``version`` and where it was read: the deb apt downloaded (or
    reads from a local repository), else apt's index; (None, why) when none tells."""
    cached = __utils__["sentry_method.cached_deb"](APT_ARCHIVES, package, version, _listdir(APT_ARCHIVES))
    deb = cached or _local_deb(package, version)
    if deb:
        return database_version(deb), deb
    indexed = _indexed_version(package, version)
    if indexed:
        return indexed, f"apt's index of {package}={version}"
    return None, f"{package} {version} is neither downloaded nor indexed with {CONTROL_FIELD}"


def same_filesystem(serverdir: str, backup_dir: str) -> bool:
    """
    Whether release files can be hard-linked from ``serverdir`` into
    ``backup_dir`` (the upgrade's snapshots and exports): one filesystem.

    CLI Example:

    .. code-block:: bash

        salt '*' sentry_inplace.same_filesystem /var/lib/sentry/data /var/lib/sentry
    """
    try:
        return os.stat(serverdir).st_dev == os.stat(backup_dir).st_dev
    except FileNotFoundError:
        return False


def _apart(serverdir: str, backup_dir: str) -> str:
    """Why no snapshot can be made beside the serverdir, or ""."""
    if same_filesystem(serverdir, backup_dir):
        return ""
    return f"{serverdir} and {backup_dir} are on different filesystems: a snapshot cannot hard-link release files"


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def method(version: str, method: str = "auto", instance: str | None = None, follows: str = "") -> dict:
    """
    How an upgrade of the instance to package ``version`` goes and why:
    ``in_place`` when the new package's database version equals the
    serverdir's, ``export_import`` when they differ, when either is unknown,
    or when ``method=export`` forces it. Reads the deb apt downloaded for the
    version, else apt's package index; changes nothing. On a replica the
    other way is ``remake``, also taken when ``follows`` says why the replica
    does not follow its master as it is now.

    CLI Example:

    .. code-block:: bash

        salt sentry-master sentry_inplace.method 6.20.3-1
        salt sentry-master sentry_inplace.method 6.20.3-1 method=export
    """
    config = __salt__["sentry_server.settings"](instance)
    target, source = target_version(config["package"], version)
    on_disk = __utils__["sentry_method.serverdir_database_version"](config["serverdir"])
    against = follows or _apart(config["serverdir"], config["backup_dir"])
    try:
        other = {"otherwise": "remake"} if config["master_url"] else {}
        chosen = __utils__["sentry_method.choose"](method, on_disk, target, against, **other)
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None
    return {**chosen, "read_from": source}
