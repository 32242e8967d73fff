"""Debian 13 (trixie) hosts (issue 25, item 2): the deb built for trixie, deployed by the formula.

The hosts start from a clean Debian 13 root (``script/make-hostroot KIND
trixie``), of both kinds without a running systemd. Debian 13 carries no Salt:
operators install Salt's onedir packages, which bring a Python of their own.
Here that is Salt 3006 on Python 3.10 (.venv-salt3006-py310, made from
pyenv's 3.10), which the host sees at its own path, as a onedir package's.

On each kind the formula installs sentry_<version>-<revision>+deb13 (its
venv on Debian 13's Python 3.13), bootstraps a user and an index, and brings
supervisor and nginx up; the user uploads a wheel with the sentry client and
pip installs it back through nginx; a backup and its restore drill pass; a
second apply changes nothing. The Debian 12 build is refused by dpkg there,
naming the Python it needs.

Where the machine has no Python 3.10 for that Salt, the tests skip, saying so.
"""

from __future__ import annotations

import json

import pytest
from support.client import pip_install, sentry_client
from support.debs import build_deb
from support.host_roots import new_host, python_home
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION, REPO, deb_version_for
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

RELEASE = "trixie"
SALT_VENV = REPO / ".venv-salt3006-py310"
ROOT_PASSWORD = "Trixie-root-pw-3"
ALICE_PASSWORD = "Trixie-alice-pw-5"


@pytest.fixture(scope="module")
def trixie_deb():
    return build_deb(DEFAULT_VERSION, RELEASE)


@pytest.fixture(scope="module")
def onedir_salt() -> tuple[str, ...]:
    """What a trixie host must also see to run that Salt: its Python."""
    if not (SALT_VENV / "bin" / "salt-call").exists():
        pytest.skip(f"no {SALT_VENV.name}: script/bootstrap test found no Python 3.10 for Salt on Debian 13 hosts")
    home = python_home(SALT_VENV)
    return (home,) if home else ()


def pillar(deb) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD}},
                "indexes": {"alice/dev": {"bases": [], "acl_upload": ["alice"]}},
            },
            "backup": {"enabled": True, "keep": 2, "schedule": "", "drill_schedule": ""},
        }
    }


def call(salt: MasterlessSalt, *args: str):
    return json.loads(salt.call(*args).stdout)["local"]


@pytest.mark.parametrize("kind", ["systemd", "nosystemd"])
def test_the_formula_deploys_the_trixie_deb_and_pip_installs_through_nginx(kind, trixie_deb, onedir_salt, tmp_path):
    with new_host(f"trixie-{kind}", kind=kind, release=RELEASE, also_shared=onedir_salt) as host:
        assert host.path("/etc/debian_version").read_text().startswith("13.")
        assert host.path("/usr/bin/systemctl").exists() == (kind == "systemd")
        salt = MasterlessSalt(host, pillar(trixie_deb), salt_venv=SALT_VENV)

        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        assert {"sentry-package-installed", "sentry-server-initialised"} <= set(first.changed)
        assert call(salt, "sentry_admin.version")["package"] == deb_version_for(release=RELEASE)
        venv_python = host.run(["/opt/virtualenvs/sentry/bin/python", "--version"]).stdout
        assert venv_python.startswith("Python 3.13"), venv_python
        for service in ("supervisor", "nginx"):
            assert host.run(["service", service, "status"], check=False).returncode == 0, service

        wheel = make_wheel(tmp_path, "trixie-probe", "1.0", payload=kind)
        host.path("/tmp/wheels").mkdir()
        (host.path("/tmp/wheels") / wheel.name).write_bytes(wheel.read_bytes())
        sentry_client(host, "use", "http://localhost/alice/dev")
        sentry_client(host, "login", "alice", password=ALICE_PASSWORD)
        sentry_client(host, "upload", f"/tmp/wheels/{wheel.name}")
        pip_install(host, "http://localhost/alice/dev/+simple/", "trixie-probe==1.0", "/tmp/installed")
        installed = host.path("/tmp/installed/trixie_probe/__init__.py").read_text()
        assert installed.endswith(f"PAYLOAD = {kind!r}\n")

        made = call(salt, "sentry_admin.backup")
        assert made["success"] and made["counts"]["files"] == 1, made
        drilled = call(salt, "sentry_admin.verify_backup")
        assert drilled["success"] and drilled["path"] == made["path"], drilled

        again = salt.apply("sentry")
        assert again.succeeded and again.changed == {}, again.changed


def test_the_debian_12_build_is_refused_on_debian_13(sentry_deb):
    with new_host("trixie-deb12", release=RELEASE) as host:
        (host.path("/tmp") / sentry_deb.name).write_bytes(sentry_deb.read_bytes())
        refused = host.run(["dpkg", "-i", f"/tmp/{sentry_deb.name}"], check=False)
        assert refused.returncode != 0
        assert "sentry depends on python3 (<< 3.12)" in refused.stderr, refused.stderr
