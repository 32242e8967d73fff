"""docs/pillar.md and pillar.example say what defaults.yaml holds, and cannot drift from it."""

from __future__ import annotations

import subprocess
import sys

import yaml
from support.paths import REPO

sys.path.insert(0, str(REPO / "script"))
import pillar_table

FREE_FORM = (
    "bootstrap:users",
    "bootstrap:indexes",
    "mirror:ca_certificates",
)  # their keys are names the operator chooses


def keys(tree: dict) -> set[str]:
    """Every setting's key path; a free-form mapping counts as one key, whatever it holds."""
    found = set()
    for path, _ in pillar_table.leaves(tree):
        found.add(next((key for key in FREE_FORM if path == key or path.startswith(f"{key}:")), path))
    return found


PILLAR_PAGE = REPO / "docs" / "pillar.md"


def test_pillar_table_is_made_from_defaults():
    checked = subprocess.run(
        [sys.executable, str(REPO / "script" / "pillar_table.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    page = PILLAR_PAGE.read_text()
    defaults = yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]
    for path in keys(defaults):
        assert f"| `{path}` |" in page, path


def test_the_check_notices_a_stale_table(tmp_path, monkeypatch):
    stale = PILLAR_PAGE.read_text().replace("| `server:port` | `3141` |", "| `server:port` | `8080` |")
    assert stale != PILLAR_PAGE.read_text()
    (tmp_path / "pillar.md").write_text(stale)
    monkeypatch.setattr(pillar_table, "PAGE", tmp_path / "pillar.md")
    monkeypatch.setattr(sys, "argv", ["pillar_table.py", "--check"])
    assert pillar_table.main() == 1
    monkeypatch.setattr(sys, "argv", ["pillar_table.py"])
    assert pillar_table.main() == 0
    assert (tmp_path / "pillar.md").read_text() == PILLAR_PAGE.read_text()


def test_pillar_example_shows_every_key():
    defaults = yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]
    example = yaml.safe_load((REPO / "pillar.example").read_text())["sentry"]
    assert keys(example) == keys(defaults)
    assert example["bootstrap"]["users"] and example["bootstrap"]["indexes"]  # and shows how they look


def test_the_example_tree_names_only_known_keys():
    """example/pillar (docs/environments.md): every file's keys are defaults.yaml's (test_environments
    applies the tree through a master; this says it at once, without hosts)."""
    defaults = keys(yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"])
    files = sorted((REPO / "example" / "pillar" / "sentry").glob("*.sls"))
    assert len(files) >= 4, files
    for path in files:
        assert keys(yaml.safe_load(path.read_text())["sentry"]) <= defaults, path.name
