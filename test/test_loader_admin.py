"""sentry_admin, sentry_user and sentry_index through Salt's loader, against a real server.

Loader-level (pytest-salt-factories ``Loaders``, no salt-call): the loader runs
inside a test host where the sentry deb is deployed, since sentry_admin is
only available where the package is (its ``__virtual__`` says so, checked
in a bare host: this machine may well have sentry deployed by README's first
command).
"""

from __future__ import annotations

import json

import pytest
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import REPO, formula_tree

pytestmark = pytest.mark.slow

ROOT_PASSWORD = "Loader-Root-pw-3"
CAROL_PASSWORD = "Loader-Carol-pw-5"
CAROL_KEY = "sentry:bootstrap:users:carol:password"
PILLAR = {
    "sentry": {
        "server": {"root_password": ROOT_PASSWORD, "no_root_pypi": True},
        "bootstrap": {"users": {"carol": {"password": CAROL_PASSWORD}}},
    }
}


@pytest.fixture(scope="module")
def host(sentry_deb):
    with new_host("loader-admin") as host:
        pillar = json.loads(json.dumps(PILLAR))
        pillar["sentry"]["package"] = {"source": "deb", "deb": str(sentry_deb)}
        pillar["sentry"]["bootstrap"] = {}
        run = MasterlessSalt(host, pillar).apply("sentry")
        assert run.succeeded, run.failed or run.errors
        yield host


def through_loader(host, *calls, pillar: dict = PILLAR) -> list[dict]:
    request = {
        "repo": str(REPO),
        "file_root": str(formula_tree()),
        "pillar": pillar,
        "calls": [list(call) for call in calls],
    }
    ran = host.run(
        [str(REPO / ".venv" / "bin" / "python"), str(REPO / "test" / "support" / "loader_in_host.py")],
        input=json.dumps(request),
    )
    return json.loads(ran.stdout.strip().splitlines()[-1])


def test_without_the_package_the_module_says_why(bare_host):
    (missing,) = through_loader(bare_host, ("missing", "sentry_admin.status", [], {}), pillar={})
    assert missing["value"] and "the sentry package is not installed" in missing["value"], missing


def test_module_functions(host):
    status, version, users, made, again, user, index, missing, no_server = through_loader(
        host,
        ("module", "sentry_admin.status", [], {}),
        ("module", "sentry_admin.version", [], {}),
        ("module", "sentry_admin.list_users", [], {}),
        ("module", "sentry_admin.bootstrap_index", ["dora", "dev"], {"bases": [], "password": "Dora-pw-1"}),
        ("module", "sentry_admin.bootstrap_index", ["dora", "dev"], {"bases": [], "password": "Dora-pw-1"}),
        ("module", "sentry_admin.user_get", ["dora"], {}),
        ("module", "sentry_admin.index_get", ["dora/dev"], {}),
        ("module", "sentry_admin.index_get", ["dora/nope"], {}),
        ("module", "sentry_admin.status", [], {"url": "http://127.0.0.1:9"}),
    )
    assert status["value"]["up"] is True and status["value"]["role"] == "master"
    assert version["value"]["package"].startswith(version["value"]["server"])
    assert users["value"] == ["root"]
    assert made["value"]["user_created"] is True
    assert again["value"]["user_created"] is False
    assert user["value"] is not None and "password" not in json.dumps(user["value"])
    assert index["value"]["bases"] == []
    assert missing["value"] is None
    assert no_server["value"]["up"] is False and "does not answer" in no_server["value"]["error"], no_server


def test_state_functions_plan_then_apply_then_change_nothing(host):
    planned, made, again, index_planned, index_made, index_again, gone, *user_gone = through_loader(
        host,
        (
            "state",
            "sentry_user.present",
            ["carol"],
            {"password_pillar": CAROL_KEY, "test": True},
        ),
        ("state", "sentry_user.present", ["carol"], {"password_pillar": CAROL_KEY}),
        ("state", "sentry_user.present", ["carol"], {"password_pillar": CAROL_KEY}),
        ("state", "sentry_index.present", ["carol/dev"], {"bases": ["root/pypi"], "test": True}),
        ("state", "sentry_index.present", ["carol/dev"], {"bases": []}),
        ("state", "sentry_index.present", ["carol/dev"], {"bases": []}),
        ("state", "sentry_index.absent", ["carol/dev"], {}),
        ("state", "sentry_index.absent", ["carol/dev"], {}),
        ("state", "sentry_user.absent", ["carol"], {"test": True}),
        ("state", "sentry_user.absent", ["carol"], {}),
        ("state", "sentry_user.absent", ["carol"], {}),
    )
    assert planned["value"]["result"] is None and planned["value"]["changes"]
    assert made["value"]["result"] is True and made["value"]["changes"]
    assert again["value"]["result"] is True and again["value"]["changes"] == {}
    assert index_planned["value"]["result"] is None and index_planned["value"]["changes"]
    assert index_made["value"]["result"] is True and index_made["value"]["changes"]
    assert index_again["value"]["changes"] == {}
    assert gone["value"]["result"] is True and gone["value"]["changes"]
    index_gone_again, user_planned, user_deleted, user_gone_again = user_gone
    assert index_gone_again["value"] == {**index_gone_again["value"], "result": True, "changes": {}}
    assert user_planned["value"]["result"] is None and user_planned["value"]["changes"] == {
        "user": {"old": "carol", "new": None}
    }
    assert user_deleted["value"]["result"] is True and "deleted" in user_deleted["value"]["comment"]
    assert user_gone_again["value"]["result"] is True and user_gone_again["value"]["changes"] == {}
    everything = json.dumps([planned, made, again])
    assert CAROL_PASSWORD not in everything and ROOT_PASSWORD not in everything
