"""README's first command, script/deploy, on fresh hosts of the kinds users have.

Each host is a clean Debian 12 root as it comes: systemctl present but systemd
not running (containers, chroots, CI runners), or no systemd at all. Nothing
of the init system is altered: the formula itself must bring supervisor and
nginx up. Then a person's first steps: the client makes an index, uploads,
and pip installs the package back through nginx.
"""

from __future__ import annotations

import re

import pytest
from support.client import pip_install, upload_as_root
from support.host_roots import new_host
from support.paths import REPO
from support.wheels import make_wheel

pytestmark = pytest.mark.slow


def deploy(host) -> str:
    return host.run([str(REPO / "script" / "deploy")], timeout=900).stdout


@pytest.mark.parametrize("kind", ["systemd", "nosystemd"])
def test_deploy_answers_pip_through_nginx_and_redeploys_without_changes(kind, sentry_deb, tmp_path):
    with new_host(f"deploy-{kind}", kind=kind) as host:
        # The host is what users have: systemd installed and not running, or absent.
        assert host.path("/usr/bin/systemctl").exists() == (kind == "systemd")
        assert not host.path("/run/systemd/system").exists()
        # A fresh clone: this machine's own deployment (.salt-local/) is not in it.
        host.run(["rm", "-rf", f"{REPO}/.salt-local"])

        first = deploy(host)
        assert "generated a root password" in first
        url = re.search(r"sentry answers at (http://\S+/) ", first)
        assert url, first
        for service in ("supervisor", "nginx"):
            assert host.run(["service", service, "status"], check=False).returncode == 0, service
        secrets = host.path(f"{REPO}/.salt-local/pillar/secrets.sls")
        assert secrets.stat().st_mode & 0o077 == 0
        password = re.search(r'root_password: "(.+)"', secrets.read_text()).group(1)
        assert password not in first

        # The formula's restart keeps a supervisord running (Debian's script alone leaves none on such hosts).
        supervisord = host.run(["cat", "/var/run/supervisord.pid"]).stdout
        salt_call = [f"{REPO}/.venv/bin/salt-call", "-c", f"{REPO}/.salt-local", "--local"]
        host.run([*salt_call, "sentry_service.restart", "supervisor"])
        assert host.run(["service", "supervisor", "status"], check=False).returncode == 0
        assert host.run(["cat", "/var/run/supervisord.pid"]).stdout != supervisord
        host.wait_for("curl -fs -o /dev/null http://localhost/+api", timeout=120)

        # The seed's first steps, by hand, through nginx.
        wheel = make_wheel(tmp_path, "deploy-probe", "1.0", payload=kind)
        upload_as_root(host, "http://localhost/", password, wheel, "dev", bases="root/pypi")
        pip_install(host, "http://localhost/root/dev/+simple/", "deploy-probe==1.0", "/tmp/installed")
        assert host.path("/tmp/installed/deploy_probe/__init__.py").read_text().endswith(f"PAYLOAD = {kind!r}\n")

        # A site change reloads nginx (same master process, new limit in force).
        nginx_pid = host.run(["cat", "/run/nginx.pid"]).stdout
        host.path(f"{REPO}/.salt-local/pillar/local.sls").write_text(
            "sentry:\n  nginx:\n    client_max_body_size: 1M\n"
        )
        deploy(host)
        assert host.run(["cat", "/run/nginx.pid"]).stdout == nginx_pid
        too_big = (
            "head -c 2000000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' --data-binary @- http://localhost/"
        )
        assert host.sh(too_big).stdout == "413"

        # Stopped by hand, both come back with the next deploy; otherwise nothing changes.
        host.run(["service", "nginx", "stop"])
        host.run(["service", "supervisor", "stop"])
        host.wait_for("! service supervisor status", timeout=90)
        revived = deploy(host)
        assert "sentry answers" in revived
        again = deploy(host)
        assert "changed=" not in again, again
        assert "generated a root password" not in again
        assert host.path(f"{REPO}/.salt-local/pillar/secrets.sls").read_text() == secrets.read_text()
        pip_install(host, "http://localhost/root/dev/+simple/", "deploy-probe==1.0", "/tmp/again")
