"""How an upgrade goes (in place or export/import) and the bookkeeping of the in-place steps.

No root, no host, no server: the choice from the two database versions and
the pillar, reading them (a serverdir's .serverversion, devpi_server/main.py's
text, apt's cache), the snapshot of a serverdir in a temporary folder (links
for release files, copies for the rest), the journal's order around each
in-place step and what the plan says. The real upgrades are in
test_upgrade_inplace.
"""

from __future__ import annotations

import os

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

method = load("_utils/sentry_method.py", "sentry_method_unit")
snapshot = load("_utils/sentry_snapshot.py", "sentry_snapshot_unit")
inplace = load("_utils/sentry_inplace.py", "sentry_inplace_unit")
attempts = load("_utils/sentry_attempt.py", "sentry_attempt_method_unit")
runner = load("_runners/sentry_upgrade.py", "sentry_upgrade_runner_method_unit")


# --- the choice ------------------------------------------------------------------


def test_equal_database_versions_go_in_place_and_say_why():
    chosen = method.choose("auto", "4", "4")
    assert chosen == {
        "method": "in_place",
        "why": "database version 4 on disk and in the new package",
        "serverdir_database_version": "4",
        "target_database_version": "4",
    }


@pytest.mark.parametrize(
    ("forced", "on_disk", "target", "why"),
    [
        ("auto", "4", "5", "database version 4 on disk, 5 in the new package"),
        ("export", "4", "4", "sentry:upgrade:method is export"),
        ("auto", None, "4", "the serverdir's database version is unknown (no .serverversion)"),
        ("auto", "4", None, "the new package's database version is unknown"),
    ],
)
def test_anything_else_exports_and_imports(forced, on_disk, target, why):
    chosen = method.choose(forced, on_disk, target)
    assert (chosen["method"], chosen["why"]) == ("export_import", why)


def test_a_replica_that_does_not_follow_its_master_as_it_is_now_is_remade():
    chosen = method.choose("auto", "4", "4", follows="it does not follow m", otherwise="remake")
    assert (chosen["method"], chosen["why"]) == ("remake", "it does not follow m")
    assert method.choose("auto", "4", "4", otherwise="remake")["method"] == "in_place"


def test_an_unknown_forced_method_is_refused():
    with pytest.raises(ValueError, match="one of auto, export, got 'inplace'"):
        method.choose("inplace", "4", "4")


def test_the_versions_are_read_as_devpi_compares_them(tmp_path):
    assert method.serverdir_database_version(str(tmp_path)) is None
    (tmp_path / ".serverversion").write_text("4")
    assert method.serverdir_database_version(str(tmp_path)) == "4"
    (tmp_path / ".serverversion").write_text("3.1.0\n")  # what devpi-server 2 wrote: the first field counts
    assert method.serverdir_database_version(str(tmp_path)) == "3"
    main_py = 'import sys\n\nDATABASE_VERSION = "4"\n\n\ndef check_compatible_version(config):\n'
    assert method.database_version_in_source(main_py) == "4"
    assert method.database_version_in_source("VERSION = 4\n") is None


def test_the_deb_apt_downloaded_is_found_by_version():
    names = ["sentry_6.14.0-1_amd64.deb", "sentry_6.20.3-1_amd64.deb", "sentry-ng_6.20.3-1_amd64.deb", "partial"]
    assert method.cached_deb("/a", "sentry", "6.20.3-1", names) == "/a/sentry_6.20.3-1_amd64.deb"
    assert method.cached_deb("/a", "sentry", "1:6.20.3-1", ["sentry_1%3a6.20.3-1_all.deb"]) == (
        "/a/sentry_1%3a6.20.3-1_all.deb"
    )
    assert method.cached_deb("/a", "sentry", "6.21.0-1", names) is None


# --- the snapshot ----------------------------------------------------------------


def serverdir(tmp_path):
    data = tmp_path / "data"
    (data / "+files" / "alice" / "dev" / "+f" / "abc").mkdir(parents=True)
    (data / "+files" / "alice" / "dev" / "+f" / "abc" / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (data / ".indices").mkdir()
    (data / ".indices" / "MAIN_1.toc").write_bytes(b"search")
    (data / ".sqlite").write_bytes(b"database")
    (data / ".serverversion").write_text("4")
    os.chmod(data / ".sqlite", 0o600)
    return data


def test_release_files_are_linked_and_everything_else_copied(tmp_path):
    data = serverdir(tmp_path)
    made = snapshot.take(str(data), str(tmp_path / "_data-backup-1"))
    copy = tmp_path / "_data-backup-1"
    assert made == {"path": str(copy), "linked": 1, "copied": 3}
    wheel = "+files/alice/dev/+f/abc/pkg-1.0-py3-none-any.whl"
    assert os.stat(data / wheel).st_ino == os.stat(copy / wheel).st_ino
    for name in (".sqlite", ".serverversion", ".indices/MAIN_1.toc"):
        assert os.stat(data / name).st_ino != os.stat(copy / name).st_ino
        assert (copy / name).read_bytes() == (data / name).read_bytes()
    assert os.stat(copy / ".sqlite").st_mode & 0o777 == 0o600
    (data / ".sqlite").write_bytes(b"changed by the new version")  # the copy does not see it
    assert (copy / ".sqlite").read_bytes() == b"database"
    assert not list(tmp_path.glob("._*.incomplete"))


def test_a_snapshot_that_fails_removes_its_partial_copy_and_says_where(tmp_path, monkeypatch):
    data = serverdir(tmp_path)

    def no_links(*_args, **_kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(snapshot.os, "link", no_links)
    with pytest.raises(CommandExecutionError, match="one filesystem") as failed:
        snapshot.take(str(data), str(tmp_path / "_data-backup-1"))
    assert str(tmp_path / "._data-backup-1.incomplete") in str(failed.value)
    assert not (tmp_path / "_data-backup-1").exists()
    assert not (tmp_path / "._data-backup-1.incomplete").exists()  # a disk-full failure must not stay disk-full
    assert os.listdir(data / "+files/alice/dev/+f/abc")  # the serverdir keeps its files


def test_release_files_linked_while_serving_are_brought_up_to_date_at_the_stop(tmp_path, monkeypatch):
    data = serverdir(tmp_path)
    old = data / "+files/alice/dev/+f/abc/pkg-1.0-py3-none-any.whl"
    assert snapshot.prepare(str(data), str(tmp_path)) == {"path": str(tmp_path / snapshot.PREPARED), "linked": 1}
    # While it still serves: one file uploaded, one deleted (and another uploaded in its folder).
    new = data / "+files/alice/dev/+f/def/pkg-2.0-py3-none-any.whl"
    new.parent.mkdir()
    new.write_bytes(b"wheel 2")
    old.unlink()
    (old.parent / "pkg-1.1-py3-none-any.whl").write_bytes(b"wheel 1.1")
    linked = []
    real_link = os.link
    monkeypatch.setattr(
        snapshot.os, "link", lambda *args, **kwargs: linked.append(args[0]) or real_link(*args, **kwargs)
    )
    made = snapshot.take(str(data), str(tmp_path / "_data-backup-1"))
    assert made["linked"] == 2
    assert sorted(os.path.basename(path) for path in linked) == ["pkg-1.1-py3-none-any.whl", "pkg-2.0-py3-none-any.whl"]
    copy = tmp_path / "_data-backup-1" / "+files/alice/dev/+f"
    assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*.whl")) == [
        "abc/pkg-1.1-py3-none-any.whl",
        "def/pkg-2.0-py3-none-any.whl",
    ]
    assert os.stat(copy / "def/pkg-2.0-py3-none-any.whl").st_ino == os.stat(new).st_ino
    assert not (tmp_path / snapshot.PREPARED).exists()


def test_a_second_take_after_prepare_links_nothing_unchanged(tmp_path, monkeypatch):
    data = serverdir(tmp_path)
    snapshot.prepare(str(data), str(tmp_path))
    monkeypatch.setattr(snapshot.os, "link", lambda *args, **kwargs: pytest.fail(f"linked {args[0]} again"))
    assert snapshot.take(str(data), str(tmp_path / "_data-backup-1"))["linked"] == 1


def test_a_snapshot_never_overwrites(tmp_path):
    data = serverdir(tmp_path)
    (tmp_path / "_data-backup-1").mkdir()
    with pytest.raises(CommandExecutionError, match="exists already"):
        snapshot.take(str(data), str(tmp_path / "_data-backup-1"))


# --- the in-place steps and their journal ----------------------------------------


class Journal:
    """Records every write of the journal, in order, with what the host did in between."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def mapping(self) -> dict:
        return {
            "begin": lambda _dir, operation, **facts: self.events.append(("begin", operation)),
            "update": lambda _dir, **facts: self.events.append(("journal", facts)),
            "end": lambda _dir: self.events.append(("end",)),
        }


def actions(journal: Journal, fail: str = "") -> dict:
    def act(name, result=None):
        def run(*args):
            journal.events.append(("act", name))
            if name == fail:
                raise CommandExecutionError(f"{name} failed")
            return result

        return run

    return {
        "new_path": lambda: "/srv/_data-backup-1",
        "snapshot": act("snapshot", {"path": "/srv/_data-backup-1", "linked": 3, "copied": 4}),
        "install": act("install"),
        "start": act("start"),
        "check": act("check", {"files": 3}),
    }


CONFIG = {"program": "sentry-server", "serverdir": "/srv/data"}


def test_each_in_place_step_is_in_the_journal_before_it_acts():
    journal = Journal()
    attempt = attempts.new("upgrade", CONFIG, "6.14.0-1", "6.20.3-1", journal.mapping())
    attempt.begin()
    fields = inplace.master(attempt, actions(journal))
    assert fields == {"snapshot": {"path": "/srv/_data-backup-1", "linked": 3, "copied": 4}, "health": {"files": 3}}
    assert journal.events[1:] == [
        ("journal", {"step": "snapshot"}),
        ("journal", {"snapshot": "/srv/_data-backup-1"}),
        ("act", "snapshot"),
        ("journal", {"backup": "/srv/_data-backup-1"}),  # to put back only once whole
        ("journal", {"step": "install"}),
        ("journal", {"installed": True}),
        ("act", "install"),
        ("journal", {"step": "start server"}),
        ("journal", {"serve": True}),
        ("act", "start"),
        ("journal", {"step": "health check"}),
        ("act", "check"),
    ]
    assert attempt.changed["backup"] == "/srv/_data-backup-1" and attempt.changed["installed"] is True


@pytest.mark.parametrize(
    ("fail", "backup", "installed"),
    [("snapshot", None, False), ("install", "/srv/_data-backup-1", True), ("check", "/srv/_data-backup-1", True)],
)
def test_a_failed_step_leaves_the_attempt_knowing_what_to_undo(fail, backup, installed):
    journal = Journal()
    attempt = attempts.new("upgrade", CONFIG, "6.14.0-1", "6.20.3-1", journal.mapping())
    with pytest.raises(CommandExecutionError, match=f"{fail} failed"):
        inplace.master(attempt, actions(journal, fail=fail))
    assert (attempt.changed["backup"], attempt.changed["installed"]) == (backup, installed)


def test_a_replica_in_place_catches_up_instead_of_a_health_check():
    journal = Journal()
    attempt = attempts.new("replica upgrade", CONFIG, "6.14.0-1", "6.20.3-1", journal.mapping())
    fields = inplace.replica(attempt, actions(journal))
    assert fields["synced"] == {"files": 3}
    assert attempt.steps.current == "catch up"


# --- what the plan says ----------------------------------------------------------


def plan_answers(method_answer) -> dict:
    at = {"ret": {"package": "6.14.0-1", "server": None}, "retcode": 0}
    return {"master": {"m": at}, "replicas": {}, "front": {}, "method": {"m": method_answer}}


WANTED = {"version": "6.20.3-1", "master": "m", "replicas": "", "front": ""}


def test_the_plan_says_how_the_master_goes_and_why():
    said = method.choose("auto", "4", "4")
    plan = runner.make_plan(WANTED, plan_answers({"ret": {**said, "read_from": "apt"}, "retcode": 0}))
    assert plan["method"]["method"] == "in_place"
    assert "master m (6.14.0-1, in_place: database version 4 on disk and in the new package)" in plan["summary"]


@pytest.mark.parametrize(
    "answer",
    [
        {"ret": "'sentry_inplace.method' is not available.", "retcode": 1},  # a master not yet synced
        {"ret": {**method.choose("auto", "4", None), "read_from": "not indexed"}, "retcode": 0},
    ],
)
def test_a_plan_that_cannot_tell_says_the_master_decides_after_download(answer):
    plan = runner.make_plan(WANTED, plan_answers(answer))
    assert plan["method"]["method"] == "decided after download"
    assert "decided after download" in plan["summary"]


def test_a_forced_export_is_in_the_plan_even_before_download():
    said = method.choose("export", "4", None)
    plan = runner.make_plan(WANTED, plan_answers({"ret": {**said, "read_from": "x"}, "retcode": 0}))
    assert (plan["method"]["method"], plan["method"]["why"]) == ("export_import", "sentry:upgrade:method is export")
