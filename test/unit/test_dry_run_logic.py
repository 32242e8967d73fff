"""Dry runs (test=True) with Salt's loader mocks: when a failure is a change to come, and what supervisor is asked.

No root, no host: sentry_admin is a recorder of a server that is up or down,
broken or fine, and supervisor's API a recorder too. test_dry_run (one level
up) runs the same against a deployed host.
"""

from __future__ import annotations

import os
import xmlrpc.client

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

URL = "http://127.0.0.1:3141"
ROOT_PASSWORD = "Unit-Root-pw-61"
DORA_PASSWORD = "Unit-Dora-pw-67"


state_utils = load("_utils/sentry_state.py", "sentry_state_utils")
supervisor_utils = load("_utils/sentry_supervisor.py", "sentry_supervisor_utils")
user_state = load("_states/sentry_user.py", "sentry_user_state")
index_state = load("_states/sentry_index.py", "sentry_index_state")
program_state = load("_states/sentry_program.py", "sentry_program_state")
server_state = load("_states/sentry_server.py", "sentry_server_state")


class Server:
    """sentry_admin's functions over a server that answers, or not; records what was asked."""

    def __init__(self) -> None:
        self.up = True
        self.broken = False  # it answers, with 500 to anything but /+api
        self.users = {"root": {"username": "root"}, "alice": {"username": "alice"}}
        self.changed: list[str] = []

    def _ask(self, what: str) -> None:
        if not self.up:
            raise CommandExecutionError(f"sentry at {URL}/{what} does not answer: [Errno 111]; is the server running?")
        if self.broken:
            raise CommandExecutionError(f"reading {what} failed (500): Internal Server Error")

    def answers(self, url=None):
        return self.up

    def user_get(self, name, url=None):
        self._ask(f"user {name}")
        return self.users.get(name)

    def user_password_matches(self, name, password, url=None):
        self._ask("+login")
        return name == "root" and password == ROOT_PASSWORD

    def user_set(self, name, password=None, email=None, url=None, root_password=None):
        if root_password != ROOT_PASSWORD:
            raise CommandExecutionError(f"login as root at {URL} failed (401): Unauthorized")
        self.changed.append(f"user {name}")

    def user_delete(self, name, url=None, root_password=None):
        self.user_set(name, root_password=root_password)

    def index_get(self, name, url=None):
        self._ask(f"index {name}")

    def index_set(self, name, url=None, root_password=None, **config):
        self.user_set(name, root_password=root_password)

    def functions(self) -> dict:
        names = ("user_get", "user_password_matches", "user_set", "user_delete", "index_get", "index_set")
        admin = {f"sentry_admin.{name}": getattr(self, name) for name in names}
        return {"sentry_server.answers": self.answers, **admin}


@pytest.fixture
def server():
    return Server()


class Supervisor:
    """supervisord's API as a dry run may use it: reading only. ``started``: None while it does not know the program."""

    def __init__(self) -> None:
        self.started: int | None = None
        self.calls: list[str] = []

    def getProcessInfo(self, name):
        self.calls.append("getProcessInfo")
        if self.started is None:
            raise xmlrpc.client.Fault(supervisor_utils.BAD_NAME, "BAD_NAME")
        return {"statename": "RUNNING", "start": self.started}

    def __getattr__(self, name):
        raise AssertionError(f"a dry run called supervisor's {name}")


@pytest.fixture
def supervisor():
    return Supervisor()


@pytest.fixture
def configure_loader_modules(server, supervisor):
    utils = {
        **{
            f"sentry_state.{f}": getattr(state_utils, f)
            for f in ("failed", "check_root", "absent", "plan_start", "plan_root_password", "pillar_secret")
        },
        **{f"sentry_supervisor.{f}": getattr(supervisor_utils, f) for f in ("state", "is_running")},
        "sentry_supervisor.connect": lambda path, wait: supervisor,
        "sentry_journal.read": lambda serverdir: None,  # no import or upgrade was interrupted there
    }
    salt = server.functions()  # one __salt__, which utils see too
    context = {}  # one run's, shared by the states
    dunders = {
        "__salt__": salt,
        "__utils__": utils,
        "__opts__": {"test": True},
        "__context__": context,
        "__pillar__": {"sentry": {"server": {"root_password": ROOT_PASSWORD}}, "dora": DORA_PASSWORD},
    }
    return {
        user_state: dunders,
        index_state: dunders,
        program_state: dunders,
        server_state: dunders,
        state_utils: {"__salt__": salt},
    }


def plan_start() -> None:
    """What sentry_program.running records when a dry run would (re)start the server."""
    state_utils.plan_start(user_state.__context__, "sentry-server")


def make_dora():
    return user_state.present("dora", password_pillar="dora", url=URL)


def test_a_change_is_planned_after_roots_login_is_checked(server):
    planned = make_dora()
    assert planned["result"] is None and planned["changes"] == {"user": {"old": None, "new": "dora"}}
    assert index_state.present("dora/dev", bases=[], url=URL)["result"] is None
    assert user_state.absent("alice", url=URL)["result"] is None
    assert server.changed == []


def test_a_wrong_root_password_fails_as_the_real_run_would(server):
    user_state.__pillar__["sentry"]["server"]["root_password"] = "Not-roots-pw-71"
    for ret in (
        make_dora(),
        index_state.present("dora/dev", bases=[], url=URL),
        user_state.absent("alice", url=URL),
    ):
        assert ret["result"] is False, ret
        assert ret["comment"] == (
            f"login as root at {URL} failed: pillar sentry:server:root_password does not hold root's password"
        )
    user_state.__opts__["test"] = False
    assert "login as root" in make_dora()["comment"]
    assert server.changed == []


def test_a_new_root_password_is_planned_and_the_changes_after_it_too(server):
    user_state.__pillar__["sentry"]["server"]["root_password"] = "Roots-new-pw-73"  # the server has the old one
    rotation = user_state.root_password("root", url=URL)
    assert rotation["result"] is None and "would be set" in rotation["comment"], rotation
    assert rotation["changes"] == {"password": {"old": "<hidden>", "new": "<hidden>"}}
    for ret in (
        make_dora(),
        index_state.present("dora/dev", bases=[], url=URL),
        user_state.absent("alice", url=URL),
    ):
        assert ret["result"] is None, ret  # root logs in with the new password once the run sets it
    assert server.changed == []


def test_roots_password_as_in_pillar_is_left_alone(server):
    ret = user_state.root_password("root", url=URL)
    assert ret["result"] is True and ret["changes"] == {}, ret
    assert state_utils.ROOT_PLANNED not in user_state.__context__


def test_no_root_password_names_the_pillar_key():
    ret = user_state.present("dora", password_pillar="dora", url=URL, root_password_pillar="nowhere:root")
    assert ret["result"] is False and ret["comment"] == "no root password: set pillar nowhere:root"


def test_without_the_package_the_dry_run_plans_and_the_real_run_fails():
    state_utils.__salt__.clear()  # sentry_admin loads only where the package is installed
    planned = make_dora()
    assert planned["result"] is None
    assert planned["comment"] == "dora would be set up once the sentry package is installed"
    user_state.__opts__["test"] = False
    failed = make_dora()
    assert failed["result"] is False and "is the sentry package installed?" in failed["comment"]


def test_a_server_that_does_not_answer_fails_where_nothing_in_the_run_starts_it(server):
    server.up = False
    for ret in (make_dora(), index_state.bases_exist("bases", {"dora/dev": ["root/pypi"]}, url=URL)):
        assert ret["result"] is False, ret
        assert "does not answer" in ret["comment"]


def test_a_server_this_run_would_start_is_a_change_to_come(server):
    server.up = False
    plan_start()
    planned = make_dora()
    assert planned["result"] is None
    assert planned["comment"].startswith("dora would be set up once this run has started sentry (sentry at ")
    user_state.__opts__["test"] = False
    assert make_dora()["result"] is False


def test_a_server_that_answers_is_judged_by_its_answer_even_when_the_run_restarts_it(server):
    plan_start()
    server.broken = True
    broken = make_dora()
    assert broken["result"] is False and "(500)" in broken["comment"]
    server.broken = False
    user_state.__pillar__["sentry"]["server"]["root_password"] = "Not-roots-pw-71"
    assert "login as root" in make_dora()["comment"]


@pytest.fixture
def conf_file(tmp_path):
    conf = tmp_path / "sentry-server.conf"
    conf.write_text("[program:sentry-server]\n")
    os.utime(conf, (1000, 1000))
    return conf


@pytest.mark.parametrize(
    ("started", "changes"),
    [
        (None, {"config": "added", "state": {"old": "ABSENT", "new": "RUNNING"}}),
        (999, {"config": "changed"}),  # the file was written after the program started
        (1000, {}),  # in the same second: supervisor's start times are whole seconds
        (2000, {}),
    ],
)
def test_a_dry_run_compares_the_file_with_the_programs_start_and_only_reads(conf_file, supervisor, started, changes):
    supervisor.started = started
    ret = program_state.running("sentry-server", conf_file=str(conf_file))
    assert ret["changes"] == changes
    assert ret["result"] is (None if changes else True)
    assert set(supervisor.calls) == {"getProcessInfo"}
    planned = program_state.__context__.get(state_utils.PLANNED_STARTS, set())
    assert planned == ({"sentry-server"} if changes else set())


def test_a_watched_change_plans_a_restart(supervisor):
    supervisor.started = 2000
    ret = program_state.mod_watch("sentry-server", conf_file="/nonexistent")
    assert ret["result"] is None and ret["comment"] == "sentry-server would be restarted"
    assert program_state.__context__[state_utils.PLANNED_STARTS] == {"sentry-server"}
    assert supervisor.calls == []


def test_initialising_without_a_root_password_fails_the_dry_run(tmp_path):
    ret = server_state.initialised(str(tmp_path), root_password_pillar="nowhere:root")
    assert ret["result"] is False and ret["comment"] == "pillar nowhere:root is empty"
    planned = server_state.initialised(str(tmp_path), root_password_pillar="sentry:server:root_password")
    assert planned["result"] is None and planned["changes"] == {"initialised": {"old": None, "new": "master"}}
