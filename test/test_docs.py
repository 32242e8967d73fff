"""README and docs/: the pillar table and pillar.example say what defaults.yaml holds and cannot drift from
it, every relative link leads to a file and a heading that exist, and the pillars shown name only known keys."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
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


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and code spans: what GitHub reads links and headings from."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as GitHub gives it."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown page whose file, or whose heading after '#', does not exist."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto: ...
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    return broken


def test_the_pages_exist_and_readme_links_each():
    assert len(PAGES) > 10, PAGES
    readme = prose((REPO / "README.md").read_text())
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"README's Documentation list does not link {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_lead_to_a_file_and_a_heading(page):
    assert broken_links(page) == []


def test_the_link_check_notices_a_missing_file_or_heading(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Where it runs\n\n## In place or export/import: how (`sentry.upgrade`) decides\n\n## Where it runs\n\n"
        "[ok](b.md) [ok](#where-it-runs) [ok](#where-it-runs-1)\n"
        "[ok](a.md#in-place-or-exportimport-how-sentryupgrade-decides) [ok](https://example.org/x.md) `[code](c.md)`\n"
        "[gone](c.md) [gone](b.md#nowhere) [gone](#where-it-runs-2)\n"
        "```\n# not a heading\n```\n[gone](#not-a-heading)\n"
    )
    (tmp_path / "b.md").write_text("# B\n")
    assert broken_links(tmp_path / "a.md") == [
        f"c.md: no file {tmp_path / 'c.md'}",
        "b.md#nowhere: no heading with anchor #nowhere in b.md",
        "#where-it-runs-2: no heading with anchor #where-it-runs-2 in a.md",
        "#not-a-heading: no heading with anchor #not-a-heading in a.md",
    ]


def table_keys(page: str) -> list[str]:
    """The keys of the pillar table's rows, in order, as often as they appear."""
    table = page[page.index(pillar_table.BEGIN) : page.index(pillar_table.END)]
    return re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)


def test_every_pillar_key_is_in_the_table_once():
    defaults = yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]
    counted = Counter(table_keys(PILLAR_PAGE.read_text()))
    wanted = [path for path, _ in pillar_table.leaves(defaults)]
    assert {path: counted[path] for path in wanted} == dict.fromkeys(wanted, 1)
    assert set(counted) == set(wanted), set(counted) - set(wanted)


def test_the_pillars_shown_name_only_known_keys():
    """Every YAML block of README and docs/ that holds a pillar 'sentry:' names only defaults.yaml's keys."""
    defaults = keys(yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"])
    shown = 0
    for page in PAGES:
        for block in re.findall(r"^```yaml\n(.*?)^```$", page.read_text(), re.MULTILINE | re.DOTALL):
            if not re.search(r"^sentry:", block, re.MULTILINE):
                continue
            pillar = yaml.safe_load(block)["sentry"]
            assert keys(pillar) <= defaults, (page.name, keys(pillar) - defaults)
            shown += 1
    assert shown >= 5, shown
