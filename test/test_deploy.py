"""README's first command, script/deploy, on a fresh host: sentry answers through nginx."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, new_host

pytestmark = pytest.mark.slow


def test_deploy_answers_through_nginx_and_redeploys_without_changes(sentry_deb):
    with new_host("deploy") as host:
        host.prepare_services()
        first = host.run([str(REPO / "script" / "deploy")], timeout=900)
        assert "generated a root password" in first.stdout
        url = re.search(r"sentry answers at (http://\S+/) ", first.stdout)
        assert url, first.stdout
        local = re.sub(r"//[^:/]+", "//127.0.0.1", url.group(1))
        api = host.run(["curl", "-fsS", "-H", "Accept: application/json", f"{local}+api"]).stdout
        assert '"login"' in api
        secrets = host.path(f"{REPO}/.salt-local/pillar/secrets.sls")
        assert secrets.stat().st_mode & 0o077 == 0
        password = re.search(r'root_password: "(.+)"', secrets.read_text()).group(1)
        assert password not in first.stdout + first.stderr

        again = host.run([str(REPO / "script" / "deploy")], timeout=900)
        assert "changed=" not in again.stdout, again.stdout
        assert "generated a root password" not in again.stdout
        assert host.path(f"{REPO}/.salt-local/pillar/secrets.sls").read_text() == secrets.read_text()
