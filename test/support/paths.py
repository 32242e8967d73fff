"""Where things are: the repository, its pins, the default sentry version and the deb's revision."""

from __future__ import annotations

import os
import shutil
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


# What Salt serves of this repository: the formula and its extension modules (not .venv*, build/ with its
# Debian roots, .git), seen through links, so that a file-list walk of the state tree reads a few hundred
# files instead of the whole clone.
FORMULA_DIRS = ("sentry", "_modules", "_states", "_utils", "_runners", "_beacons")


def formula_tree() -> Path:
    """build/formula-tree: a link to each of ``FORMULA_DIRS``, made once (atomically: test runs share it)."""
    tree = REPO / "build" / "formula-tree"
    if tree.is_dir():
        return tree
    building = tree.with_name(f".formula-tree-{os.getpid()}")
    building.mkdir(parents=True)
    for name in FORMULA_DIRS:
        (building / name).symlink_to(REPO / name)
    try:
        building.rename(tree)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(building)
    return tree
