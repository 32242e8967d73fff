"""The sentry debs: built (or reused) per pinned version, their versions, installed in a test host."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.hosts import TestHost
from support.paths import HOST_RELEASE, PINS, REPO
from support.timing import step


def build_deb(version: str, release: str = HOST_RELEASE) -> Path:
    """Build (or reuse) the deb for a pinned devpi-server version and a Debian release; returns its path."""
    with step("deb build"):
        completed = subprocess.run(
            [str(REPO / "packaging" / "build-deb"), version, release], capture_output=True, text=True, check=False
        )
    if completed.returncode != 0:
        pytest.fail(f"build-deb {version} failed:\n{completed.stdout[-5000:]}\n{completed.stderr[-5000:]}")
    match = re.search(r"(\S+\.deb)", completed.stdout.strip().splitlines()[-1])
    assert match, completed.stdout
    return Path(match.group(1))


def known_versions(release: str = HOST_RELEASE) -> list[str]:
    """The devpi-server versions pinned for ``release``, oldest first."""
    pinned = (PINS / release).glob("*.txt")
    return sorted((p.stem for p in pinned), key=lambda v: tuple(int(x) for x in v.split(".")))


def deb_version(deb: Path) -> str:
    """6.14.0-3+deb12 from sentry_6.14.0-3+deb12_amd64.deb."""
    return deb.name.split("_")[1]


def install_deb(host: TestHost, deb: Path) -> None:
    shutil.copy(deb, host.path("/tmp") / deb.name)
    host.run(["dpkg", "-i", f"/tmp/{deb.name}"])


def installed_version(host) -> str:
    query = host.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "sentry"], check=False)
    return query.stdout.removeprefix("install ok installed ") if query.returncode == 0 else ""
