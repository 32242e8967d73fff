"""Where things are: the repository, its pins, the default sentry version and the deb's revision."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "packaging" / "pins"
DEFAULT_VERSION = (PINS / "DEFAULT").read_text().strip()
REVISION = (REPO / "packaging" / "REVISION").read_text().strip()
UNIT_TIER = REPO / "test" / "unit"
