"""A local apt repository of the built debs, for test hosts without a network.

The formula's default ``package: {source: repo, version: X}`` installs from an
apt repository the host already knows. Tests make a flat repository of the
built debs under ``build/apt`` (git-ignored, inside the repository so hosts see
it through ``new_host``'s shared mount even where ``/tmp`` is a tmpfs) and
point a host at it with one sources.list.d file.

Downgrades (checked on Salt 3008.4, apt 2.6): ``pkg.installed`` and
``pkg.install`` with an older ``version`` than the installed one just work.
``salt/modules/aptpkg.py:install`` compares the wanted version with the
installed one, and for a lower one runs a separate ``apt-get -y --force-yes
install sentry=<old>``; apt 2.6 still honours the deprecated ``--force-yes`` as
``--allow-downgrades`` (plain ``-y`` would refuse: "Packages were downgraded
and -y was used without --allow-downgrades"). ``allow_downgrades`` is read only
by ``pkg.upgrade``, never by ``pkg.install``, so passing it changes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from email.utils import formatdate
from pathlib import Path

from support.hosts import TestHost

SOURCES_LIST = "/etc/apt/sources.list.d/sentry-test.list"


def make_apt_repo(directory: Path, debs: list[Path]) -> Path:
    """A flat repository (``deb [trusted=yes] file:<directory> ./``) of ``debs``, made afresh.

    The debs are hard-linked (copied across filesystems). A Release file lists
    the indexes that exist, so apt asks for nothing else and says nothing about
    missing compressed ones.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for deb in debs:
        try:
            os.link(deb, directory / deb.name)
        except OSError:
            shutil.copy(deb, directory / deb.name)
    scanned = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=directory,
        capture_output=True,
        check=True,
    )
    (directory / "Packages").write_bytes(scanned.stdout)
    (directory / "Packages.gz").write_bytes(gzip.compress(scanned.stdout, mtime=0))
    (directory / "Release").write_text(_release(directory, ("Packages", "Packages.gz")))
    return directory


def _release(directory: Path, indexes: tuple[str, ...]) -> str:
    lines = [f"Date: {formatdate(usegmt=True)}", "SHA256:"]
    for name in indexes:
        data = (directory / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def use_apt_repo(host: TestHost, directory: Path) -> None:
    """Let ``host`` install from the repository: its sources entry, then an update of that list alone.

    Updating only this list (the others are kept, not cleaned up) means
    nothing tries the network, which a test host does not have.
    """
    host.path(SOURCES_LIST).write_text(f"deb [trusted=yes] file:{directory} ./\n")
    host.run(
        [
            "apt-get",
            "update",
            "-o",
            f"Dir::Etc::sourcelist={SOURCES_LIST}",
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        ],
        timeout=120,
    )
