"""The trail an import or upgrade leaves beside a serverdir, and putting data back from any half-done move.

Plain files in a temporary folder; no root, no server. What a real kill -9
leaves, and how the formula and sentry_data.recover handle it, is in
test_crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.loading import REPO, load

journal = load("_utils/sentry_journal.py", "sentry_journal_unit")
backups = load("_utils/sentry_backups.py", "sentry_backups_unit")


@pytest.fixture
def serverdir(tmp_path) -> str:
    data = tmp_path / "data"
    data.mkdir()
    (data / ".nodeinfo").write_text("{}")
    return str(data)


def test_a_trail_lives_beside_the_serverdir_until_the_end(serverdir):
    assert journal.read(serverdir) is None
    record = journal.begin(serverdir, "upgrade", version_before="1-1")
    assert journal.path(serverdir) == serverdir + ".operation.json"
    assert journal.mine(record) and journal.alive(record)
    journal.update(serverdir, step="import", backup="/x/_data-backup-1")
    assert journal.read(serverdir)["step"] == "import" and journal.read(serverdir)["version_before"] == "1-1"
    with pytest.raises(FileExistsError):
        journal.begin(serverdir, "import")
    journal.end(serverdir)
    assert journal.read(serverdir) is None
    assert os.listdir(os.path.dirname(serverdir)) == ["data"]  # no temporary file left either


def test_a_dead_owner_is_told_from_a_live_one(serverdir):
    # The owner: a process that wrote the trail and exited, as a killed minion would.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('j', {str(REPO / '_utils/sentry_journal.py')!r})\n"
        "j = importlib.util.module_from_spec(spec); spec.loader.exec_module(j)\n"
        f"j.begin({serverdir!r}, 'import')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    record = journal.read(serverdir)
    assert record["operation"] == "import"
    assert not journal.alive(record) and not journal.mine(record)
    # A reused pid is not the owner: same pid, another start time.
    assert not journal.alive({**record, "pid": os.getpid()})
    assert "an interrupted import at step 'begin'" in journal.describe(record)


def test_an_unreadable_trail_still_blocks(serverdir):
    Path(journal.path(serverdir)).write_text("{half")
    record = journal.read(serverdir)
    assert record is not None and record["operation"] == "unknown" and not journal.alive(record)
    said = journal.describe(record)
    assert journal.path(serverdir) in said and "cannot be read" in said and "only record" in said


def test_two_operations_beginning_at_once_cannot_both_own_the_trail(serverdir, monkeypatch):
    # The other's trail appears between this one's look (none yet) and its write: it must not be replaced.
    other = {"operation": "import", "pid": 1}
    real_read = journal.read
    monkeypatch.setattr(journal, "read", lambda sd: None)
    Path(journal.path(serverdir)).write_text(str(other).replace("'", '"'))
    with pytest.raises(FileExistsError):
        journal.begin(serverdir, "upgrade")
    monkeypatch.setattr(journal, "read", real_read)
    assert journal.read(serverdir) == other
    assert [name for name in os.listdir(os.path.dirname(serverdir)) if name.endswith(".tmp")] == []


def test_root_writes_no_trail_through_a_link_the_service_user_planted(serverdir, tmp_path):
    victim = tmp_path / "root-owned"
    victim.write_text("untouched")
    target = journal.path(serverdir)
    os.symlink(victim, f"{target}.{os.getpid()}.tmp")  # the temporary file's name, as the owner of the folder could
    journal.begin(serverdir, "upgrade")
    journal.update(serverdir, step="stop")
    assert victim.read_text() == "untouched"
    assert journal.read(serverdir)["step"] == "stop" and not os.path.islink(target)


def test_put_back_undoes_a_move_at_any_point(serverdir, tmp_path):
    aside = backups.move_aside(serverdir, "backup")
    assert os.listdir(serverdir) == [] and os.path.exists(os.path.join(aside, ".nodeinfo"))
    (Path(serverdir) / "half-imported").write_text("x")
    failed = backups.put_back(serverdir, aside)
    assert os.path.exists(os.path.join(serverdir, ".nodeinfo"))
    assert os.listdir(failed) == ["half-imported"] and os.path.basename(failed).startswith("_data-failed-")

    # Killed right after the rename: no serverdir at all.
    aside = backups.new_path(str(tmp_path), "backup")
    os.rename(serverdir, aside)
    assert backups.put_back(serverdir, aside) is None
    assert os.path.exists(os.path.join(serverdir, ".nodeinfo"))

    # Killed after the empty serverdir was made: nothing to keep from it.
    aside = backups.move_aside(serverdir, "backup")
    assert backups.put_back(serverdir, aside) is None
    assert sorted(os.listdir(tmp_path)) == ["_data-failed-" + failed.rsplit("_data-failed-", 1)[1], "data"]


def test_a_killed_import_scratch_is_found_beside_its_own_serverdir_only(serverdir, tmp_path):
    assert backups.import_scratch(serverdir) == []
    scratch = tmp_path / ".data.import-abc123"
    scratch.mkdir()
    (tmp_path / ".other.import-def456").mkdir()  # another instance's
    (tmp_path / ".data.import-file").write_text("not a dir")
    assert backups.import_scratch(serverdir) == [str(scratch)]


def test_the_package_serves_over_a_trail_only_while_the_operation_that_set_serve_lives(serverdir, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "packaging" / "src"))
    server = load("packaging/src/sentry_commands/server.py", "sentry_server_command_unit")
    assert server.interrupted_operation(Path(serverdir)) is None
    journal.begin(serverdir, "upgrade")
    assert "Not serving over it" in server.interrupted_operation(Path(serverdir))
    journal.update(serverdir, serve=True)  # this process is the live upgrade that starts the server
    assert server.interrupted_operation(Path(serverdir)) is None
    # The same record once its owner died (kill -9): a restarted program must not serve the unchecked data.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    journal.update(serverdir, pid=int(dead.stdout), pid_start="0")
    assert "Not serving over it" in server.interrupted_operation(Path(serverdir))
    journal.update(serverdir, pid=os.getpid())  # a live process under a reused pid is not the owner either
    assert "Not serving over it" in server.interrupted_operation(Path(serverdir))
