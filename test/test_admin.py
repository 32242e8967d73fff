"""_modules/sentry_admin.py against a real deployed server, through salt-call."""

from __future__ import annotations

import json

import pytest
from conftest import DEFAULT_VERSION, REVISION, MasterlessSalt, new_host

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(sentry_deb):
    with new_host("admin") as host:
        host.prepare_services()
        salt = MasterlessSalt(
            host,
            {
                "sentry": {
                    "package": {"source": "deb", "deb": str(sentry_deb)},
                    "server": {"root_password": "Admin-Root-pw-5", "offline_mode": True},
                }
            },
        )
        run = salt.apply("sentry")
        assert run.succeeded, run.failed or run.errors
        yield salt


def call(salt: MasterlessSalt, *args: str):
    return json.loads(salt.call(*args).stdout)["local"]


def test_status_of_a_master(deployed):
    status = call(deployed, "sentry_admin.status")
    assert status["up"] is True
    assert status["role"] == "master"
    assert status["url"] == "http://127.0.0.1:3141"
    assert isinstance(status["serial"], int) and status["serial"] >= 0
    assert status["serverdir"] == "/var/lib/sentry/data"


def test_version_names_package_and_server(deployed):
    assert call(deployed, "sentry_admin.version") == {
        "package": f"{DEFAULT_VERSION}-{REVISION}",
        "server": DEFAULT_VERSION,
    }


def test_users_and_indexes(deployed):
    assert call(deployed, "sentry_admin.list_users") == ["root"]
    indexes = call(deployed, "sentry_admin.list_indexes")
    assert indexes["root/pypi"]["type"] == "mirror"


def test_a_server_that_does_not_answer_says_so(deployed):
    failed = deployed.call("sentry_admin.status", "url=http://127.0.0.1:9", check=False)
    assert failed.returncode != 0
    assert "does not answer" in failed.stdout + failed.stderr


def test_module_explains_why_it_is_unavailable(bare_host):
    salt = MasterlessSalt(bare_host)
    failed = salt.call("sentry_admin.status", check=False)
    assert failed.returncode != 0
    assert "the sentry package is not installed" in failed.stdout + failed.stderr
