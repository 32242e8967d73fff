#!/usr/bin/env python3
"""docs/pillar.md's table of pillar keys, made from sentry/defaults.yaml (keys, defaults, and the comments above them).

    script/pillar_table.py           rewrite docs/pillar.md between its pillar-table markers
    script/pillar_table.py --check   exit 1 when docs/pillar.md is not what it would write

test/test_docs.py runs the check, so docs/pillar.md and defaults.yaml cannot drift.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULTS = REPO / "sentry" / "defaults.yaml"
PAGE = REPO / "docs" / "pillar.md"
BEGIN = "<!-- pillar-table: made by script/pillar_table.py from sentry/defaults.yaml; do not edit -->"
END = "<!-- pillar-table: end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?:[^#]*\s#\s(?P<inline>.*))?")


def comments_by_key(text: str) -> dict[str, str]:
    """key path ('server:port') -> the comment lines just above it and the one after it, joined."""
    found: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            pending = []
            continue
        indent = len(match["indent"])
        path = [(level, key) for level, key in path if level < indent] + [(indent, match["key"])]
        found[":".join(key for _, key in path[1:])] = " ".join(
            " ".join([*pending, match["inline"] or ""]).split()
        )  # path[0] is 'sentry'
        pending = []
    return found


def leaves(value: object, prefix: str = "") -> list[tuple[str, object]]:
    """(key path, default) of every setting; an empty mapping is a free-form leaf."""
    if isinstance(value, dict) and value:
        return [pair for key, inner in value.items() for pair in leaves(inner, f"{prefix}{key}:")]
    return [(prefix.rstrip(":"), value)]


def shown(value: object) -> str:
    if value == "":
        return "''"
    return value if isinstance(value, str) else json.dumps(value)


def undocumented() -> list[str]:
    """Keys of defaults.yaml without a comment saying what they mean."""
    text = DEFAULTS.read_text()
    comments = comments_by_key(text)
    return [path for path, _ in leaves(yaml.safe_load(text)["sentry"]) if not comments.get(path)]


def table() -> str:
    text = DEFAULTS.read_text()
    comments = comments_by_key(text)
    rows = ["| key (under `sentry:`) | default | meaning |", "| --- | --- | --- |"]
    for path, default in leaves(yaml.safe_load(text)["sentry"]):
        what = comments.get(path, "").replace("|", "\\|")
        rows.append(f"| `{path}` | `{shown(default)}` | {what} |")
    return "\n".join(rows)


def rendered(page: str) -> str:
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    return page[:start] + "\n" + table() + "\n" + page[end:]


def main() -> int:
    page = PAGE.read_text()
    wanted = rendered(page)
    if "--check" in sys.argv[1:]:
        missing = undocumented()
        if missing:
            print(f"sentry/defaults.yaml: say what these mean in a comment above them: {missing}", file=sys.stderr)
            return 1
        if wanted != page:
            print(
                "docs/pillar.md's pillar table differs from sentry/defaults.yaml: run script/pillar_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    PAGE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
