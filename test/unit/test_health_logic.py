"""The health check: an export's dataindex.json against what a server's JSON API answers, and devpi-fsck.

No root, no host, no server: the export and the server's answers are made
here from one description, shaped as devpi 6.20 writes and answers them
(checked against a real export); then the server's side is changed one way
at a time, and the check must name exactly that. devpi-fsck's outcomes are
its real output. The real imports are in test/test_health.py.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

compare = load("_utils/sentry_compare.py", "sentry_compare_unit")
health = load("_modules/sentry_health.py", "sentry_health_unit")

BASE = "http://127.0.0.1:3141"
USERS = {
    "root": {"created": "2026-01-01T00:00:00Z"},
    "alice": {"email": "alice@example.org", "created": "2026-01-02T00:00:00Z", "title": "Alice"},
    "bob": {"created": "2026-01-03T00:00:00Z"},
}
INDEXES = {
    "root/pypi": {"type": "mirror", "mirror_url": "https://pypi.org/simple/", "volatile": False},
    "alice/dev": {"type": "stage", "bases": ["root/pypi"], "volatile": True, "acl_upload": ["alice"]},
    "alice/prod": {"type": "stage", "bases": ["alice/dev"], "volatile": False, "acl_upload": ["alice", "bob"]},
}
# index, project as uploaded, version, basename
FILES = [
    ("alice/dev", "Foo_Bar", "1.0", "Foo_Bar-1.0-py3-none-any.whl"),
    ("alice/dev", "foo-bar", "1.1", "foo_bar-1.1-py3-none-any.whl"),
    ("alice/dev", "foo-bar", "1.1", "foo_bar-1.1.tar.gz"),
    ("alice/prod", "baz", "2.0", "baz-2.0-py3-none-any.whl"),
    ("alice/prod", "foo-bar", "2.0", "foo_bar-2.0-py3-none-any.whl"),  # alice/dev, its base, has 1.0 and 1.1
]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def export_of(files=FILES) -> dict:
    """dataindex.json as devpi-export writes it: users with their secrets, indexes, projects, files."""
    indexes = {name: {"indexconfig": copy.deepcopy(config)} for name, config in INDEXES.items()}
    for index in indexes.values():
        if config_is_stage(index["indexconfig"]):
            index.update({"projects": {}, "files": []})
    for index, project, version, basename in files:
        normal = compare.normalize(project)
        indexes[index]["projects"].setdefault(normal, {})[version] = {"name": project, "version": version}
        digest = sha256(basename)
        indexes[index]["files"].append(
            {
                "type": "releasefile",
                "projectname": normal,
                "version": version,
                "relpath": f"{index}/{normal}/{version}/{basename}",
                "entrymapping": {"hash_spec": f"sha256={digest}", "hashes": {"sha256": digest}, "version": version},
            }
        )
    users = {
        name: {**settings, "username": name, "pwhash": f"$argon2id$secret-of-{name}"}
        for name, settings in USERS.items()
    }
    return {"dumpversion": "2", "users": users, "indexes": indexes}


def config_is_stage(config: dict) -> bool:
    return config["type"] == "stage"


def server_of(files=FILES) -> dict:
    """The answers of devpi's JSON API for the same state, by path: GET /, /index, /index/project."""
    root = {name: {**settings, "username": name, "indexes": {}} for name, settings in USERS.items()}
    for name, config in INDEXES.items():
        user, index = name.split("/")
        root[user]["indexes"][index] = {**copy.deepcopy(config), "mirror_whitelist": []}  # a default the server adds
    answers = {"": root}
    for name, config in INDEXES.items():
        if config_is_stage(config):
            answers[name] = {**config, "projects": []}
    for index, project, version, basename in files:
        normal = compare.normalize(project)
        if normal not in answers[index]["projects"]:
            answers[index]["projects"].append(normal)
        page = answers.setdefault(f"{index}/{normal}", {})
        digest = sha256(basename)
        page.setdefault(version, {"name": project, "version": version, "+links": []})["+links"].append(
            {
                "rel": "releasefile",
                "hash_spec": f"sha256={digest}",
                "hashes": {"sha256": digest},
                "href": f"{BASE}/{index}/+f/{digest[:3]}/{digest[3:16]}/{basename}",
            }
        )
    return answers


class Server:
    """``sentry_api.get`` over canned answers; counts the requests.

    As devpi does, a project's page holds the versions of the index's bases
    too, unless asked with ``?ignore_bases``.
    """

    def __init__(self, answers: dict) -> None:
        self.answers, self.requests = answers, []

    def get(self, url: str, what: str) -> dict:
        path = url.removeprefix(BASE + "/")
        self.requests.append(path)
        path, _, query = path.partition("?")
        if path not in self.answers:
            raise CommandExecutionError(f"{what} failed (404): not found")
        answer = copy.deepcopy(self.answers[path])
        if path.count("/") == 2 and query != "ignore_bases":
            index, project = path.rsplit("/", 1)
            for base in INDEXES[index].get("bases", []):
                answer = {**copy.deepcopy(self.answers.get(f"{base}/{project}", {})), **answer}
        return answer


def utils(server: Server) -> dict:
    """__utils__ of a minion: sentry_compare as it is, the API answered by ``server``."""
    return {**{f"sentry_compare.{name}": getattr(compare, name) for name in dir(compare)}, "sentry_api.get": server.get}


def found(export: dict, answers: dict) -> list[str]:
    """What the comparison says of ``answers`` (a server) against ``export``."""
    health.__utils__ = utils(Server(answers))
    return compare.differences(compare.expected(export), health._server_state(BASE, compare.expected(export)))


def test_the_same_state_differs_in_nothing():
    assert found(export_of(), server_of()) == []


def test_the_check_asks_once_per_index_and_once_per_project():
    server = Server(server_of())
    health.__utils__ = utils(server)
    health._server_state(BASE, compare.expected(export_of()))
    assert sorted(server.requests) == [
        "",
        "alice/dev",
        "alice/dev/foo-bar?ignore_bases",
        "alice/prod",
        "alice/prod/baz?ignore_bases",
        "alice/prod/foo-bar?ignore_bases",
    ]


def test_secrets_and_mirror_contents_are_never_compared():
    expected = compare.expected(export_of())
    assert "pwhash" not in expected["users"]["alice"]
    assert "root/pypi" not in expected["projects"] and "root/pypi" in expected["indexes"]


def test_counts():
    assert compare.counts(compare.expected(export_of())) == {"users": 3, "indexes": 3, "projects": 3, "files": 5}


def without_user(answers: dict, name: str) -> dict:
    del answers[""][name]
    return answers


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda a: without_user(a, "bob"), ["user bob is missing"]),
        (
            lambda a: a[""].update(carol={"username": "carol", "indexes": {}}),
            ["user carol is on the server but not in the export"],
        ),
        (
            lambda a: a[""]["alice"].update(email="mallory@example.org"),
            ["user alice: email is 'mallory@example.org', exported 'alice@example.org'"],
        ),
        (lambda a: a[""]["alice"].pop("title"), ["user alice: title is not set, exported 'Alice'"]),
        (
            lambda a: a[""]["alice"]["indexes"]["prod"].update(volatile=True),
            ["index alice/prod: volatile is True, exported False"],
        ),
        (
            lambda a: a[""]["alice"]["indexes"]["dev"].update(acl_upload=["alice", "eve"]),
            ["index alice/dev: acl_upload is ['alice', 'eve'], exported ['alice']"],
        ),
        (
            lambda a: a[""]["root"]["indexes"]["pypi"].update(mirror_url="https://evil.example.org/simple/"),
            ["index root/pypi: mirror_url is 'https://evil.example.org/simple/', exported 'https://pypi.org/simple/'"],
        ),
        (
            lambda a: a[""]["alice"]["indexes"].update(extra={"type": "stage", "bases": []}),
            ["index alice/extra is on the server but not in the export"],
        ),
    ],
    ids=["user-missing", "user-added", "user-setting", "user-setting-unset", "index-setting", "index-acl",
         "mirror-setting", "index-added"],
)  # fmt: skip
def test_each_difference_of_users_and_indexes_is_named(change, says):
    answers = server_of()
    change(answers)
    assert found(export_of(), answers) == says


def test_a_missing_index_is_named_once():
    answers = server_of()
    del answers[""]["alice"]["indexes"]["prod"]
    assert found(export_of(), answers) == ["index alice/prod is missing"]


def test_a_file_with_other_bytes_names_both_hashes():
    answers = server_of()
    link = answers["alice/prod/baz"]["2.0"]["+links"][0]
    link["hashes"] = {"sha256": "0" * 64}
    link["hash_spec"] = "sha256=" + "0" * 64
    assert found(export_of(), answers) == [
        f"alice/prod: baz-2.0-py3-none-any.whl has sha256 {'0' * 64} on the server, "
        f"{sha256('baz-2.0-py3-none-any.whl')} in the export"
    ]


def test_a_file_missing_or_added_is_named():
    missing = server_of(files=FILES[:2] + FILES[3:])
    assert found(export_of(), missing) == ["alice/dev: foo_bar-1.1.tar.gz is missing"]
    extra = ("alice/dev", "foo-bar", "1.1", "foo_bar-1.1-py2-none-any.whl")
    assert found(export_of(), server_of(files=[*FILES, extra])) == [
        "alice/dev: foo_bar-1.1-py2-none-any.whl is on the server but not in the export"
    ]


def test_a_missing_project_or_version_is_named():
    assert found(export_of(), server_of(files=[f for f in FILES if f[1] != "baz"])) == [
        "alice/prod: project baz is missing"
    ]
    answers = server_of()
    del answers["alice/dev/foo-bar"]["1.0"]
    assert found(export_of(), answers) == [
        "alice/dev: foo-bar 1.0 is missing",
        "alice/dev: Foo_Bar-1.0-py3-none-any.whl is missing",
    ]


def test_a_file_under_another_version_is_named():
    answers = server_of()
    page = answers["alice/dev/foo-bar"]
    page["1.0"]["+links"].append(page["1.1"]["+links"].pop())  # foo_bar-1.1.tar.gz
    assert found(export_of(), answers) == [
        "alice/dev: foo_bar-1.1.tar.gz is listed under version 1.0, exported under 1.1"
    ]


def test_hashes_compare_on_what_both_have():
    assert compare.hashes_of({"hash_spec": "md5=abc"}) == {"md5": "abc"}
    assert compare.hashes_of({"hashes": {"sha256": "x"}, "hash_spec": "sha256=x"}) == {"sha256": "x"}
    export = export_of()
    entry = export["indexes"]["alice/prod"]["files"][0]["entrymapping"]
    entry.pop("hashes")
    entry["hash_spec"] = "md5=0123"
    assert found(export, server_of()) == [
        "alice/prod: baz-2.0-py3-none-any.whl has no hash to compare (server: sha256, export: md5)"
    ]


def test_a_file_exported_without_hash_is_hashed_from_the_export(tmp_path):
    export = export_of()
    entry = export["indexes"]["alice/prod"]["files"][0]
    entry["entrymapping"] = {}
    (tmp_path / entry["relpath"]).parent.mkdir(parents=True)
    (tmp_path / entry["relpath"]).write_text("baz-2.0-py3-none-any.whl")
    assert compare.expected(export, str(tmp_path))["files"]["alice/prod"]["baz"]["baz-2.0-py3-none-any.whl"] == {
        "version": "2.0",
        "hashes": {"sha256": sha256("baz-2.0-py3-none-any.whl")},
    }


def test_a_long_list_is_cut_saying_how_many_more():
    assert compare.summary([f"user u{n} is missing" for n in range(30)], limit=2) == (
        "user u0 is missing; user u1 is missing; and 28 more"
    )


FSCK_OUTPUT = """\
2026-11-26 05:07:16,786 INFO  NOCTX serverdir: /srv/a
2026-11-26 05:07:16,797 INFO  [Rtx4] Checking at serial 4
2026-11-26 05:07:16,798 ERROR [Rtx4] alice/dev/+f/716/c630a36d22d81/Foo_Bar-1.0-py3-none-any.whl - sha256 mismatch
2026-11-26 05:07:16,799 ERROR [Rtx4] Missing file alice/dev/+f/590/642d31550e648/foo_bar-1.1-py3-none-any.whl
2026-11-26 05:07:16,800 INFO  [Rtx4] Finished with a total of 2 files.
2026-11-26 05:07:16,800 ERROR [Rtx4] A total of 1 files are missing.
fatal: There have been errors during consistency check.
"""


# devpi-server 6.14 with a file gone: its crash recovery fails before any check
FSCK_STORAGE_OUTPUT = """\
2026-11-26 05:39:12,886 INFO  NOCTX uuid: d8fc7c4bc8ea454e87562ee7e312a8fc
2026-11-26 05:39:12,889 ERROR NOCTX Error while trying to initialize storage
Traceback (most recent call last):
  File ".../devpi_server/filestore_fs.py", line 87, in check_pending_renames
    raise OSError("missing file %s" % dst)
OSError: missing file /srv/a/+files/root/dev/+f/b74/c7cf1c4d057f5/foo-1.2-py3-none-any.whl
 fatal: Couldn't initialize storage
"""


def test_fsck_errors_are_its_error_lines():
    assert compare.fsck_errors(FSCK_OUTPUT) == [
        "alice/dev/+f/716/c630a36d22d81/Foo_Bar-1.0-py3-none-any.whl - sha256 mismatch",
        "Missing file alice/dev/+f/590/642d31550e648/foo_bar-1.1-py3-none-any.whl",
        "A total of 1 files are missing.",
        "fatal: There have been errors during consistency check.",
    ]
    assert compare.fsck_errors(FSCK_STORAGE_OUTPUT) == [
        "Error while trying to initialize storage",
        "OSError: missing file /srv/a/+files/root/dev/+f/b74/c7cf1c4d057f5/foo-1.2-py3-none-any.whl",
        "fatal: Couldn't initialize storage",
    ]


FSCK_PASSED = """\
2026-11-26 05:39:12,120 INFO  [Rtx4] Checking at serial 4
2026-11-26 05:39:12,121 INFO  [Rtx4] Finished with a total of 5 files.
checked /var/lib/sentry/data: every file is there with its checksum
"""
OLD_SENTRY_SERVER = "usage: sentry-server [-h] ...\nsentry-server: error: unrecognized arguments: --fsck\n"


class Minion:
    """__salt__ and __utils__ for sentry_health: an instance, an export, a server, and what fsck answers.

    ``fsck_answers``: (retcode, stdout, stderr) of each command run, in turn.
    """

    def __init__(self, export: dict, answers: dict, fsck_answers=((0, FSCK_PASSED, ""),)) -> None:
        self.server = Server(answers)
        self.export, self.fsck_answers, self.commands = export, list(fsck_answers), []

    def run_all(self, argv: list[str], **options) -> dict:
        self.commands.append(argv)
        retcode, stdout, stderr = self.fsck_answers.pop(0)
        return {"retcode": retcode, "stdout": stdout, "stderr": stderr}

    def install(self, module) -> None:
        settings = {"program": "sentry-server", "url": BASE, "serverdir": "/var/lib/sentry/data", "user": "sentry"}
        module.__salt__ = {
            "sentry_server.settings": lambda instance: settings,
            "sentry_data.read_export": lambda path: copy.deepcopy(self.export),
            "sentry_data.is_initialised": lambda serverdir: serverdir != "/srv/empty",
            "cmd.run_all": self.run_all,
        }
        module.__utils__ = utils(self.server)


def test_the_check_returns_what_it_checked():
    minion = Minion(export_of(), server_of())
    minion.install(health)
    checked = health.check("/var/lib/sentry/export-1")
    assert {key: checked[key] for key in ("users", "indexes", "projects", "files", "fsck_files")} == {
        "users": 3, "indexes": 3, "projects": 3, "files": 5, "fsck_files": 5
    }  # fmt: skip
    assert minion.commands == [
        ["runuser", "-u", "sentry", "--", "/usr/sbin/sentry-server", "--fsck", "--serverdir", "/var/lib/sentry/data"]
    ]


def test_the_check_names_every_difference_and_fsck_in_one_error():
    minion = Minion(export_of(), without_user(server_of(), "bob"), fsck_answers=[(1, FSCK_OUTPUT, "")])
    minion.install(health)
    with pytest.raises(CommandExecutionError) as failed:
        health.check("/var/lib/sentry/export-1", url=BASE + "/", serverdir="/srv/b")
    assert str(failed.value) == (
        f"{BASE} does not hold what /var/lib/sentry/export-1 holds: devpi-fsck of /srv/b failed: "
        + "; ".join(compare.fsck_errors(FSCK_OUTPUT))
        + "; user bob is missing"
    )


def test_the_check_compares_with_the_export_as_read_before():
    """The upgrade reads the export right after exporting; what the export holds later does not count."""
    read_before = compare.expected(export_of())
    later = export_of()
    del later["users"]["bob"]
    Minion(later, without_user(server_of(), "bob")).install(health)
    with pytest.raises(CommandExecutionError, match="user bob is missing"):
        health.check("/var/lib/sentry/export-1", expected=read_before)


def test_fsck_falls_back_on_devpi_fsck_under_a_sentry_server_without_it():
    minion = Minion(export_of(), server_of(), fsck_answers=[(2, "", OLD_SENTRY_SERVER), (0, FSCK_PASSED, "")])
    minion.install(health)
    assert health.fsck()["files"] == 5
    assert minion.commands[1] == [
        "runuser", "-u", "sentry", "--", "/opt/virtualenvs/sentry/bin/devpi-fsck", "--serverdir",
        "/var/lib/sentry/data",
    ]  # fmt: skip


def test_fsck_of_no_server_says_so():
    Minion(export_of(), server_of()).install(health)
    with pytest.raises(CommandExecutionError, match="/srv/empty holds no initialised server: nothing to check"):
        health.fsck(serverdir="/srv/empty")


# --- an in-place upgrade's brief check -------------------------------------------

BRIEF_ROOT = {
    "root": {"username": "root", "indexes": {}},
    "alice": {"username": "alice", "email": "a@example.org", "indexes": {"dev": {"type": "stage", "volatile": True}}},
}


def brief(serial: int = 41, uuid: str = "u-1", root: dict | None = None) -> dict:
    return {"serial": serial, "uuid": uuid, "root": copy.deepcopy(BRIEF_ROOT if root is None else root)}


def test_the_same_brief_has_no_differences():
    assert compare.brief_differences(brief(), brief()) == []


def test_a_lost_change_is_named_by_its_serial():
    assert compare.brief_differences(brief(), brief(serial=40)) == ["serial is 40, 41 at the stop"]


def test_another_uuid_is_named():
    assert compare.brief_differences(brief(), brief(uuid="u-2")) == ["uuid is 'u-2', 'u-1' at the stop"]


def test_a_user_or_index_setting_gone_is_named_and_new_defaults_are_fine():
    after = brief()
    del after["root"]["alice"]["indexes"]["dev"]
    after["root"]["root"]["indexes"]["pypi"] = {"type": "mirror"}
    assert compare.brief_differences(brief(), after) == [
        "index alice/dev is missing",
        "index root/pypi is on the server but not in the export",
    ]
    newer = brief()
    newer["root"]["alice"]["indexes"]["dev"]["mirror_whitelist"] = []  # a setting the new version adds
    assert compare.brief_differences(brief(), newer) == []
