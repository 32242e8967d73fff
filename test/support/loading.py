"""The formula's modules loaded by path, for the unit tier: Salt's dunders are then set by each test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load(path: str, name: str) -> ModuleType:
    """The module at ``path`` (relative to the repository) under the unique ``name``."""
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
