"""Where things are: the repository, its pins, the default sentry version and the deb's revision."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "packaging" / "pins"
DEFAULT_VERSION = (PINS / "DEFAULT").read_text().strip()
REVISION = (REPO / "packaging" / "REVISION").read_text().strip()
# The Debian releases debs are built for (packaging/build-deb), by the number in their versions' +debN.
RELEASES = {"bookworm": 12, "trixie": 13}
HOST_RELEASE = "bookworm"  # of the test hosts, unless a test names another


def deb_version_for(version: str = DEFAULT_VERSION, release: str = HOST_RELEASE) -> str:
    """The Debian version build-deb gives ``version``'s deb for ``release``: 6.20.3-3+deb12."""
    return f"{version}-{REVISION}+deb{RELEASES[release]}"


UNIT_TIER = REPO / "test" / "unit"
