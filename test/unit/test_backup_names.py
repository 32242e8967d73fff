"""Backups beside a serverdir whose parent other instances share (issue 29, item 5): each instance's names carry
its serverdir, listing and pruning see its own alone, the newest and what a trail names are never pruned.

The real sentry_backups and sentry_journal utils on folders in a temporary directory; sentry_data.prunable
with Salt's loader mocks. sentry.prune_backups on a host is in test_upgrade and test_instances.
"""

from __future__ import annotations

import json
import os

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

backups = load("_utils/sentry_backups.py", "sentry_backups_names_unit")
journal = load("_utils/sentry_journal.py", "sentry_journal_names_unit")
data = load("_modules/sentry_data.py", "sentry_data_names_unit")

OLDER, NEWER, NEWEST = "20260101-020000", "20260102-020000", "20260103-020000"


@pytest.fixture
def parent(tmp_path):
    """/srv-like parent holding two instances' serverdirs, data (the default's name) and b, and their backups."""
    for serverdir in ("data", "b", "data-backup-x"):
        (tmp_path / serverdir).mkdir()
    names = [
        *(f"_data-backup-{stamp}" for stamp in (OLDER, NEWER, NEWEST)),
        *(f"export-{stamp}" for stamp in (OLDER, NEWEST)),
        f"export-{NEWEST}-1.incomplete",  # an export still being written
        *(f"_b-backup-{stamp}" for stamp in (OLDER, NEWER)),
        *(f"export-b-{stamp}" for stamp in (OLDER, NEWER)),
        f"_b-failed-{NEWER}",
        f"_data-backup-x-backup-{NEWEST}",  # data-backup-x's: starts with data's prefix
        f"._b-backup-{NEWER}.incomplete",  # a snapshot whose upgrade was killed
    ]
    for name in names:
        (tmp_path / name).mkdir()
    return tmp_path


def names(found: dict[str, list[str]]) -> dict[str, list[str]]:
    return {kind: [os.path.basename(path) for path in paths] for kind, paths in found.items()}


def test_each_instance_lists_its_own_backups_alone(parent):
    assert names(backups.listing(str(parent / "data"))) == {
        "backup": [f"_data-backup-{NEWEST}", f"_data-backup-{NEWER}", f"_data-backup-{OLDER}"],
        "failed": [],
        "export": [f"export-{NEWEST}", f"export-{OLDER}"],
        "incomplete": [],
    }
    assert names(backups.listing(str(parent / "b"))) == {
        "backup": [f"_b-backup-{NEWER}", f"_b-backup-{OLDER}"],
        "failed": [f"_b-failed-{NEWER}"],
        "export": [f"export-b-{NEWER}", f"export-b-{OLDER}"],
        "incomplete": [f"._b-backup-{NEWER}.incomplete"],
    }
    assert names(backups.listing(str(parent / "data-backup-x")))["backup"] == [f"_data-backup-x-backup-{NEWEST}"]


def test_new_names_carry_the_serverdir_the_default_keeps_earlier_names(parent):
    assert os.path.basename(backups.new_path(str(parent / "b"), "export")).startswith("export-b-")
    assert os.path.basename(backups.new_path(str(parent / "b") + "/", "backup")).startswith("_b-backup-")
    assert os.path.basename(backups.new_path(str(parent / "data"), "export"))[len("export-") :][:2] == "20"
    assert os.path.basename(backups.new_path(str(parent / "data"), "failed")).startswith("_data-failed-")
    moved = backups.move_aside(str(parent / "b"), "failed")
    assert os.path.basename(moved).startswith("_b-failed-") and os.path.isdir(parent / "b")


@pytest.fixture
def instances(parent):
    settings = {"data": {"serverdir": str(parent / "data")}, "b": {"serverdir": str(parent / "b")}}
    data.__salt__ = {"sentry_server.settings": lambda instance=None: settings[instance or "data"]}
    data.__utils__ = {
        "sentry_backups.listing": backups.listing,
        "sentry_backups.beyond": backups.beyond,
        "sentry_journal.read": journal.read,
    }
    return parent


def test_prunable_keeps_the_newest_and_never_touches_another_instance(instances):
    assert [os.path.basename(path) for path in data.prunable(1)] == [
        f"_data-backup-{NEWER}",
        f"_data-backup-{OLDER}",
        f"export-{OLDER}",
    ]
    assert [os.path.basename(path) for path in data.prunable(2, "b")] == [f"._b-backup-{NEWER}.incomplete"]
    assert [os.path.basename(path) for path in data.prunable(1, "b")] == [
        f"_b-backup-{OLDER}",
        f"export-b-{OLDER}",
        f"._b-backup-{NEWER}.incomplete",  # unfinished snapshots, all of them
    ]
    assert data.prunable(0) == data.prunable(1)  # never the newest, whatever keep says


def test_prunable_never_lists_what_a_trail_names(instances):
    named = str(instances / f"_data-backup-{OLDER}")
    (instances / "data.operation.json").write_text(json.dumps({"operation": "upgrade", "backup": named}))
    assert named not in data.prunable(1)
    assert str(instances / f"_data-backup-{NEWER}") in data.prunable(1)
    (instances / "b.operation.json").write_text(json.dumps({"operation": "upgrade", "step": "snapshot"}))
    assert not any(path.endswith(".incomplete") for path in data.prunable(1, "b"))  # it may be making one


def test_prunable_refuses_while_the_trail_cannot_be_read(instances):
    (instances / "data.operation.json").write_text("{half")
    with pytest.raises(CommandExecutionError, match=r"data\.operation\.json cannot be read .*sentry_data\.recover"):
        data.prunable(1)


def test_a_mount_point_cannot_be_moved_aside(tmp_path):
    assert backups.cannot_move_aside(str(tmp_path)) == ""
    why = backups.cannot_move_aside("/proc")  # a mount point on every Linux host
    assert why.startswith("/proc is a mount point, which cannot be moved aside: mount the volume one level up (/)")
    assert "set sentry:server:serverdir to a folder inside the volume (e.g. /proc/data)" in why
