"""sentry_data's import with Salt's loader mocks: the command it runs, and its fallback for an older package.

The import itself (a real deb, a real export) is in test_upgrade, test_crash
and test_backup; here only what the module asks of ``sentry-server``.
"""

from __future__ import annotations

import grp
import os
import pwd

import pytest
from support.loading import load

data = load("_modules/sentry_data.py", "sentry_data_import_unit")

OLD_PACKAGE = "sentry-server: error: unrecognized arguments: --no-events\n"


class Runner:
    """cmd.run_all: answers in turn, and the commands asked."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers, self.commands = list(answers), []

    def __call__(self, argv, **kwargs) -> dict:
        self.commands.append(argv)
        code, stderr = self.answers.pop(0)
        return {"retcode": code, "stdout": "", "stderr": stderr}


@pytest.fixture
def config() -> dict:
    """The instance's user and group: this process's own, so that chown works without root."""
    return {"user": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name}


def use(runner: Runner) -> None:
    data.__salt__ = {"cmd.run_all": runner}
    data.__utils__ = {}


def test_the_import_leaves_devpi_webs_events_to_the_started_server(tmp_path, config):
    runner = Runner((0, ""))
    use(runner)
    data._import_into(str(tmp_path), "/srv/export", False, None, config)
    assert runner.commands == [
        ["/usr/sbin/sentry-server", "--serverdir", str(tmp_path), "--import", "/srv/export", "--no-root-pypi",
         "--no-events"],
    ]  # fmt: skip


def test_a_package_without_no_events_imports_as_before(tmp_path, config):
    runner = Runner((2, OLD_PACKAGE), (0, ""))
    use(runner)
    data._import_into(str(tmp_path), "/srv/export", True, None, config)
    assert runner.commands[1] == [
        "/usr/sbin/sentry-server",
        "--serverdir",
        str(tmp_path),
        "--import",
        "/srv/export",
    ]


def test_a_failed_import_says_why(tmp_path, config):
    use(Runner((1, "Fatal: the file at x is missing")))
    with pytest.raises(data.CommandExecutionError, match="import of /srv/export failed: Fatal: the file at x"):
        data._import_into(str(tmp_path), "/srv/export", True, None, config)


def test_a_fresh_serverdir_is_made_for_the_service_user(tmp_path, config):
    use(Runner((0, "")))
    data._import_into(str(tmp_path / "fresh"), "/srv/export", True, None, config)
    made = (tmp_path / "fresh").stat()
    assert (made.st_mode & 0o777, made.st_uid) == (0o750, os.getuid())


def test_an_export_index_that_is_a_link_is_not_read(tmp_path):
    secret = tmp_path / "root-only.json"
    secret.write_text('{"users": {"planted": {}}}')
    export = tmp_path / "export"
    export.mkdir()
    (export / "dataindex.json").symlink_to(secret)
    with pytest.raises(data.CommandExecutionError, match="is not a readable sentry export"):
        data.read_export(str(export))
