"""sentry.package and the pillar validation of map.jinja, applied masterless in test hosts."""

from __future__ import annotations

import pytest
from support.debs import installed_version
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import deb_version_for

DEB_VERSION = deb_version_for()


def deb_pillar(deb) -> dict:
    return {"sentry": {"package": {"source": "deb", "deb": str(deb)}}}


@pytest.fixture
def salt_host(bare_host, sentry_deb):
    """A bare test host that sees the deb at its build path (the overlay shows the repo)."""
    return MasterlessSalt(bare_host, deb_pillar(sentry_deb))


def test_package_from_deb_installs_then_changes_nothing(salt_host):
    first = salt_host.apply("sentry.package")
    assert first.succeeded, first.failed or first.errors
    assert "sentry-package-installed" in first.changed
    assert installed_version(salt_host.host) == DEB_VERSION
    second = salt_host.apply("sentry.package")
    assert second.succeeded and second.changed == {}


def test_test_mode_reports_and_installs_nothing(salt_host):
    planned = salt_host.apply("sentry.package", "test=True")
    assert planned.returncode == 0
    assert planned.by_id("sentry-package-installed")["result"] is None
    assert installed_version(salt_host.host) == ""


def test_clean_purges_the_package_and_keeps_data(salt_host):
    assert salt_host.apply("sentry.package").succeeded
    salt_host.host.sh("mkdir -p /var/lib/sentry/data && echo keep > /var/lib/sentry/data/marker")
    cleaned = salt_host.apply("sentry.clean")
    assert cleaned.succeeded, cleaned.failed
    assert installed_version(salt_host.host) == ""
    assert salt_host.host.path("/var/lib/sentry/data/marker").read_text() == "keep\n"
    assert salt_host.apply("sentry.clean").changed == {}


@pytest.mark.slow
def test_changing_the_deb_downgrades_and_upgrades(salt_host, sentry_deb, old_sentry_deb):
    old_version = old_sentry_deb.name.split("_")[1]
    for deb, version in ((old_sentry_deb, old_version), (sentry_deb, DEB_VERSION)):
        salt_host.set_pillar(deb_pillar(deb))
        run = salt_host.apply("sentry.package")
        assert run.succeeded, run.failed
        assert installed_version(salt_host.host) == version


@pytest.fixture(scope="module")
def render_host():
    """One host for all render failures: none of them may change it."""
    with new_host("render") as host:
        yield MasterlessSalt(host)


@pytest.mark.parametrize(
    ("pillar", "message"),
    [
        ({"pakage": {}}, "unknown key sentry:pakage"),
        ({"package": {"source": "ftp"}}, "sentry:package:source must be one of repo, deb, apt_repo"),
        ({"package": {"source": ["deb"]}}, "sentry:package:source must be a string, got list"),
        ({"package": "sentry"}, "sentry:package must be a mapping, got string"),
        ({"package": {"source": "deb", "deb": "/nonexistent/sentry.deb"}}, "no such file /nonexistent/sentry.deb"),
        ({"package": {"source": "deb"}}, "sentry:package:deb must name a .deb path or URL"),
        ({"package": {"source": "deb", "deb": "sentry.deb"}}, "must be an absolute path or an http(s) URL"),
        ({"package": {"source": "apt_repo"}}, "sentry:package:apt_repo:line is required"),
        ({"package": {"apt_repo": {"keyring": 5}}}, "sentry:package:apt_repo:keyring must be a string, got number"),
        ({"server": {"port": "3141"}}, "sentry:server:port must be a number, got string"),
        ({"server": {"port": 70000}}, "sentry:server:port must be a port number 1-65535, got 70000"),
        ({"nginx": {"port": 0}}, "sentry:nginx:port must be a port number 1-65535, got 0"),
        ({"server": {"root_password": ""}}, "sentry:server:root_password is required"),
        (
            {"server": {"root_password": "x", "master_url": "ftp://master"}},
            "sentry:server:master_url must be an http(s) URL",
        ),
        ({"server": {"master_url": "http://m:3141", "offline_mode": True}}, "offline_mode cannot go with"),
        ({"server": {"root_password": "x", "role": "replica"}}, "sentry:server:role must be standalone or primary"),
        ({"server": {"root_password": "x", "serverdir": "data"}}, "sentry:server:serverdir must be an absolute path"),
        ({"server": {"root_password": "x", "extra_args": "--debug"}}, "sentry:server:extra_args must be a list"),
        ({"nginx": {"tls": {"enabled": True}}}, "sentry:nginx:tls:enabled needs sentry:nginx:tls:cert"),
        ({"nginx": {"tls": {"enabled": "yes"}}}, "sentry:nginx:tls:enabled must be a boolean, got string"),
        ({"server": {"root_password": "x", "host": "0.0.0.0"}}, "sentry:server:host must be a loopback address"),  # noqa: S104
        ({"nginx": {"replica_addresses": "10.0.0.2"}}, "sentry:nginx:replica_addresses must be a list, got string"),
        ({"nginx": {"replica_addresses": ["all"]}}, "sentry:nginx:replica_addresses: each is an IP address or network"),
        ({"nginx": {"replica_addresses": ["10.0.0.0/33"]}}, "sentry:nginx:replica_addresses: each is an IP address"),
        ({"server": {"root_password": "x", "restrict_modify": "root alice"}}, "sentry:server:restrict_modify is user"),
        (
            {"server": {"root_password": "x", "restrict_modify": ["root"]}},
            "sentry:server:restrict_modify must be a string",
        ),
        (
            {"server": {"root_password": "x", "restrict_modify": "alice"}, "bootstrap": {"users": {"bob": {}}}},
            "sentry:server:restrict_modify must include root for sentry:bootstrap",
        ),
    ],
)
def test_bad_pillar_fails_at_render_naming_the_key(render_host, pillar, message):
    salt, bare_host = render_host, render_host.host
    salt.set_pillar({"sentry": pillar})
    before = salt.changed_files()
    run = salt.apply("sentry")
    assert run.returncode != 0
    assert message in run.errors
    assert run.states == {}
    assert installed_version(bare_host) == ""
    assert salt.changed_files() == before
