"""The replica in-sync watcher's verdict (sentry/files/default/sentry-in-sync.py) and its flag."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "sentry" / "files" / "default" / "sentry-in-sync.py"
spec = importlib.util.spec_from_file_location("sentry_in_sync", SCRIPT)
in_sync_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(in_sync_script)

NOW = 1700000100.0
MASTER = {"role": "MASTER", "uuid": "m1", "serial": 40}
SYNCED = {"role": "REPLICA", "primary-uuid": "m1", "serial": 40, "replica-in-sync-at": 1700000000.0}


@pytest.mark.parametrize(
    ("replica", "master", "expected"),
    [
        (SYNCED, MASTER, True),
        ({**SYNCED, "serial": 41}, MASTER, True),  # the master moved on between the two asks
        ({**SYNCED, "serial": 39}, MASTER, False),  # behind since long ago
        ({**SYNCED, "serial": 39, "replica-metadata-in-sync-at": NOW - 2}, MASTER, True),  # under writes
        ({**SYNCED, "serial": 39, "replica-metadata-in-sync-at": NOW - 60}, MASTER, False),  # stuck
        ({**SYNCED, "primary-uuid": "old"}, MASTER, False),  # follows another master (the one before an import)
        ({**SYNCED, "replica-in-sync-at": None}, MASTER, False),  # first sync not finished
        ({**SYNCED, "primary-uuid": None, "master-uuid": "m1"}, MASTER, True),  # older servers' key
        (None, MASTER, False),  # the replica does not answer
        (SYNCED, None, True),  # the master does not answer: the replica has the last data there is
        ({**SYNCED, "serial": 3}, None, True),
        ({**SYNCED, "role": "MASTER"}, MASTER, False),
    ],
)
def test_verdict(replica, master, expected):
    assert in_sync_script.in_sync(replica, master, now=NOW) is expected


def test_flag_comes_and_goes_only_on_a_change(tmp_path):
    flag = str(tmp_path / "sentry-server.in-sync")
    in_sync_script.set_flag(flag, True)
    made = Path(flag).stat().st_mtime_ns
    in_sync_script.set_flag(flag, True)
    assert Path(flag).stat().st_mtime_ns == made
    in_sync_script.set_flag(flag, False)
    assert not Path(flag).exists()
    in_sync_script.set_flag(flag, False)
    assert not Path(flag).exists()
