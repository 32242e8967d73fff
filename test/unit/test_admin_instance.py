"""sentry_admin on a host with two instances, with Salt's loader mocks: ``instance=`` picks whose server.

No root, no host, no server: two in-memory devpi APIs, one per instance's URL,
answer sentry_admin's requests. The real users and indexes are made on a
deployed server in test_admin, and a second instance is deployed in
test_instances.
"""

from __future__ import annotations

import inspect

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

admin = load("_modules/sentry_admin.py", "sentry_admin_unit")
api = load("_utils/sentry_api.py", "sentry_api_admin_unit")
rules = load("_utils/sentry_pillar.py", "sentry_pillar_admin_unit")

URLS = {"sentry-server": "http://127.0.0.1:3141", "sentry-b": "http://127.0.0.1:3142"}
ROOT_PASSWORD = "Unit-Root-pw-83"
HANDED_OVER = {"token_create", "token_list", "token_delete", "status", "version", "export", "import_", "backups"}
HANDED_OVER |= {"upgrade", "upgrade_replica", "wait_synced", "last_upgrade", "backup", "verify_backup"}


class Server:
    """The part of devpi's API sentry_admin uses: users and their indexes, root's login."""

    def __init__(self) -> None:
        self.users: dict[str, dict] = {"root": {"username": "root", "indexes": {"pypi": {"type": "mirror"}}}}

    def answer(self, method: str, path: list[str], body: dict | None, auth: str | None) -> tuple[int, dict]:
        if path == ["+login"]:
            ok = body == {"user": "root", "password": ROOT_PASSWORD}
            return (200, {"result": {"password": "token"}}) if ok else (401, {"message": "Unauthorized"})
        if not path:
            return 200, {"result": self.users}
        user = self.users.get(path[0])
        if method != "GET" and auth is None:
            return 401, {"message": "not logged in"}
        if len(path) == 1:
            return self.user(method, path[0], user, body)
        index = (user or {}).get("indexes", {}).get(path[1])
        if method == "GET":
            return (200, {"result": index}) if index is not None else (404, {"message": "no such index"})
        if method in ("PUT", "PATCH"):
            user["indexes"][path[1]] = {**(index or {}), **body}
        else:
            del user["indexes"][path[1]]
        return 200, {"result": {}}

    def user(self, method: str, name: str, user: dict | None, body: dict | None) -> tuple[int, dict]:
        if method == "GET":
            return (200, {"result": user}) if user is not None else (404, {"message": "no such user"})
        if method == "DELETE":
            del self.users[name]
        else:
            self.users[name] = {"username": name, "indexes": {}, **(user or {}), **body}
        return 201, {"result": {}}


class Host:
    """One server per instance, reached by URL; records which instance's settings were read."""

    def __init__(self) -> None:
        self.servers = {url: Server() for url in URLS.values()}
        self.settings_read: list[str | None] = []

    def settings(self, instance=None) -> dict:
        self.settings_read.append(instance)
        return {"program": instance or "sentry-server", "url": URLS[instance or "sentry-server"]}

    def request(self, method, url, body=None, auth=None) -> tuple[int, dict]:
        base = next(base for base in self.servers if url == base or url.startswith(base + "/"))
        path = [part for part in url[len(base) :].split("?")[0].split("/") if part]
        return self.servers[base].answer(method, path, body, auth)

    def login(self, base, user, password) -> str:
        api.check(*self.request("POST", f"{base}/+login", {"user": user, "password": password}), "login")
        return f"{user}@{base}"

    def on(self, instance: str) -> Server:
        return self.servers[URLS[instance]]


@pytest.fixture
def host() -> Host:
    return Host()


@pytest.fixture
def configure_loader_modules(host):
    utils = {
        "sentry_api.request": host.request,
        "sentry_api.check": api.check,
        "sentry_api.get": lambda url, what: api.check(*host.request("GET", url), what, ok=(200,)),
        "sentry_api.login": host.login,
        "sentry_api.root_password": api.root_password,
        "sentry_pillar.index_keys": rules.index_keys,
    }
    return {
        admin: {
            "__salt__": {"sentry_server.settings": host.settings},
            "__utils__": utils,
            "__pillar__": {"sentry": {"server": {"root_password": ROOT_PASSWORD}}},
        }
    }


def public_functions() -> list[str]:
    return sorted(
        name
        for name, value in vars(admin).items()
        if inspect.isfunction(value) and not name.startswith("_") and value.__module__ == admin.__name__
    )


@pytest.mark.parametrize("name", sorted(set(public_functions()) - HANDED_OVER))
def test_every_function_takes_an_instance_and_says_so(name):
    function = getattr(admin, name)
    assert "instance" in inspect.signature(function).parameters, name
    assert "CLI Example:" in function.__doc__ and "instance=sentry-b" in function.__doc__, name


def test_the_handed_over_names_are_still_there():
    assert HANDED_OVER <= set(public_functions())


def test_users_are_made_changed_and_deleted_on_the_instance_named(host):
    made = admin.user_set("alice", password="Alice-pw-1", instance="sentry-b")
    assert made == {"user": "alice", "created": True, "changed": ["password"]}
    assert admin.list_users(instance="sentry-b") == ["alice", "root"]
    assert admin.list_users() == ["root"]  # the pillar's instance is untouched
    assert admin.user_get("alice") is None and admin.user_get("alice", instance="sentry-b")["username"] == "alice"
    assert admin.user_set("alice", email="a@example.org", instance="sentry-b")["changed"] == ["email"]
    assert admin.user_password_matches("root", ROOT_PASSWORD, instance="sentry-b")
    assert admin.user_delete("alice", instance="sentry-b") is True
    assert admin.user_delete("alice", instance="sentry-b") is False
    assert "sentry-b" in host.settings_read and None in host.settings_read


def test_indexes_follow_the_instance_named(host):
    admin.user_set("alice", password="Alice-pw-1", instance="sentry-b")
    assert admin.index_set("alice/dev", bases=["root/pypi"], instance="sentry-b")["created"] is True
    assert admin.index_get("alice/dev", instance="sentry-b")["bases"] == ["root/pypi"]
    listed = admin.list_indexes(user="alice", instance="sentry-b")
    assert listed == {"alice/dev": {"type": "stage", "bases": ["root/pypi"]}}
    assert admin.list_indexes(user="alice") == {}
    with pytest.raises(CommandExecutionError, match="base index alice/dev of alice/prod does not exist"):
        admin.index_set("alice/prod", bases=["alice/dev"])  # the default instance has no alice/dev
    assert admin.index_delete("alice/dev", instance="sentry-b") is True
    assert host.on("sentry-server").users.keys() == {"root"}


def test_bootstrap_index_makes_user_and_index_on_the_instance_named(host):
    made = admin.bootstrap_index("bob", "dev", password="Bob-pw-2", instance="sentry-b")
    assert made["user_created"] is True and made["created"] is True, made
    assert host.on("sentry-b").users["bob"]["indexes"]["dev"]["bases"] == ["root/pypi"]
    assert host.on("sentry-server").users.keys() == {"root"}
    again = admin.bootstrap_index("bob", "dev", password="Bob-pw-2", instance="sentry-b")
    assert again["user_created"] is False and again["created"] is False and again["changed"] == [], again
    assert set(host.settings_read) == {"sentry-b"}  # every step went to sentry-b's server


def test_a_url_wins_over_the_instance(host):
    admin.user_set("carol", password="Carol-pw-3", url=URLS["sentry-b"] + "/", instance="sentry-server")
    assert "carol" in host.on("sentry-b").users and "carol" not in host.on("sentry-server").users
    assert host.settings_read == []
