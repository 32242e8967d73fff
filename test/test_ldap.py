"""Logins from the company directory: sentry.auth's LDAP against a real slapd (issue 16).

Two test hosts: a directory (Debian's slapd, test/support/directory.py) with
carol and dave, and the group ``uploaders`` holding carol only; and a sentry
host whose pillar points devpi-ldap at its ldaps:// URL, checked against the
directory's CA in a file of its own (``auth:ldap:ca_file``; Debian's CA
store is left as it is), searching users and groups as a service account.
The index team/dev lets the group upload (``acl_upload: [":uploaders"]``).
From inside the sentry host:

- carol logs in with her directory password and is made a user at that
  first login; a wrong password and an unknown name are refused;
- carol uploads to team/dev as a member of uploaders, dave is refused;
- the bind password is only in devpi-ldap's file (0600, the service
  user's): not in state output, the minion log, the program file or a
  command line;
- with slapd stopped, an LDAP login is refused within seconds and the
  server log says why (the deb's own plugin: devpi-ldap alone would wait for
  a server forever), local users and root still log in, and carol's session
  from before still reads;
- with a CA file that does not hold the directory's CA, LDAP logins are
  refused: ldaps:// checks the certificate;
- a second apply changes nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.client import login_status, login_token, sentry_client
from support.cluster import no_route_out
from support.directory import BIND_DN, GROUPS, PEOPLE, Directory, Person
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt, StateRun
from support.upstream import LogTail
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

DIRECTORY_NUMBER, SENTRY_NUMBER = 107, 108  # beside test_cache's 105-106
ROOT_PASSWORD = "Ldap-Root-pw-43"
TEAM_PASSWORD = "Ldap-Team-pw-47"
BIND_PASSWORD = "Ldap-Bind-pw-53"
CAROL = Person("carol", "Carol-ldap-pw-1")
DAVE = Person("dave", "Dave-ldap-pw-2")
URL = "http://127.0.0.1"
LDAP_CONFIG = "/etc/sentry/sentry-server-ldap.yaml"
SERVER_LOG = "/var/log/sentry/sentry-server.log"
MINION_LOG = f"{MasterlessSalt.CONF}/root/var/log/salt/minion"
COMPANY_CA = "/etc/ssl/company-ldap-ca.pem"  # auth:ldap:ca_file


def ldap_pillar(deb: Path, directory: Directory) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "no_root_pypi": True},
            "auth": {
                "ldap": {
                    "urls": [directory.tls_url],  # ldaps://, checked against the company CA file
                    "ca_file": COMPANY_CA,
                    "user_search": {"base": PEOPLE, "filter": "(uid={username})"},
                    "group_search": {"base": GROUPS},
                    "bind_dn": BIND_DN,
                    "bind_password": BIND_PASSWORD,
                }
            },
            "bootstrap": {
                "users": {"team": {"password": TEAM_PASSWORD}},
                "indexes": {"team/dev": {"bases": [], "acl_upload": [":uploaders"]}},
            },
        }
    }


@dataclass
class Deployment:
    host: TestHost
    directory: Directory
    salt: MasterlessSalt
    first: StateRun

    def api(self, path: str, *headers: str) -> tuple[int, dict]:
        """GET ``path`` as JSON from inside the sentry host."""
        options = [option for header in headers for option in ("-H", header)]
        answered = self.host.run(
            [
                "curl",
                "-sS",
                "-o",
                "/tmp/answer",
                "-w",
                "%{http_code}",
                "-H",
                "Accept: application/json",
                *options,
                f"{URL}{path}",
            ]
        )
        body = self.host.path("/tmp/answer").read_text()
        return int(answered.stdout), json.loads(body) if body.startswith("{") else {}

    def login_header(self, person: Person) -> str:
        """X-Devpi-Auth for a session of ``person``."""
        token = login_token(self.host, URL, person.uid, person.password)
        return "X-Devpi-Auth: " + base64.b64encode(f"{person.uid}:{token}".encode()).decode()

    def upload(self, person: Person, wheel: Path, check: bool = True):
        shutil.copy(wheel, self.host.path("/tmp") / wheel.name)
        sentry_client(self.host, "use", f"{URL}/team/dev")
        sentry_client(self.host, "login", person.uid, password=person.password)
        return sentry_client(self.host, "upload", f"/tmp/{wheel.name}", check=check)


@pytest.fixture(scope="module")
def deployment(sentry_deb):
    with (
        new_host("ldap-dir", address=host_address(DIRECTORY_NUMBER)) as directory_host,
        new_host("ldap", address=host_address(SENTRY_NUMBER)) as host,
    ):
        for each in (directory_host, host):
            no_route_out(each)
        directory = Directory(directory_host, [CAROL, DAVE], {"uploaders": [CAROL.uid]}, BIND_PASSWORD).start()
        host.path(COMPANY_CA).write_bytes(directory.ca_pem)  # the operator's file; Debian's store stays as it is
        salt = MasterlessSalt(host, ldap_pillar(sentry_deb, directory))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        yield Deployment(host, directory, salt, first)


def test_a_directory_user_logs_in_and_is_made_at_the_first_login(deployment):
    host = deployment.host
    assert deployment.api("/carol")[0] == 404  # not a user before her first login
    assert login_status(host, URL, CAROL.uid, CAROL.password) == 200
    status, body = deployment.api("/carol")
    assert status == 200 and body["result"]["username"] == "carol", body
    assert login_status(host, URL, CAROL.uid, "not-" + CAROL.password) == 401
    assert login_status(host, URL, "nobody", "Nobody-pw-3") == 401
    assert login_status(host, URL, "team", TEAM_PASSWORD) == 200  # local users still log in
    assert login_status(host, URL, "root", ROOT_PASSWORD) == 200


def test_a_group_member_uploads_and_others_are_refused(deployment, tmp_path):
    carols = make_wheel(tmp_path, "ldap-carol", "1.0")
    deployment.upload(CAROL, carols)
    status, body = deployment.api("/team/dev/ldap-carol")
    assert status == 200 and "1.0" in body["result"], body
    daves = make_wheel(tmp_path, "ldap-dave", "1.0")
    refused = deployment.upload(DAVE, daves, check=False)
    assert refused.returncode != 0
    assert "403" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert deployment.api("/team/dev/ldap-dave")[0] == 404


def test_the_bind_password_is_in_devpi_ldaps_file_alone(deployment):
    host = deployment.host
    listed = host.run(["stat", "-c", "%a %U:%G", LDAP_CONFIG]).stdout.split()
    assert listed == ["600", "sentry:sentry"]
    assert BIND_PASSWORD in host.path(LDAP_CONFIG).read_text()
    server = host.sh("cat /proc/$(pgrep -f 'devpi-server' | head -1)/cmdline | tr '\\0' ' '").stdout
    assert f"--ldap-config {LDAP_CONFIG}" in server and "--autocreate-users" in server, server
    assert BIND_PASSWORD not in server
    outputs = deployment.first.stdout + deployment.first.stderr
    for where, text in (
        ("state output", outputs),
        ("minion log", host.path(MINION_LOG).read_text(errors="replace")),
        ("program file", host.path("/etc/supervisor/conf.d/sentry-server.conf").read_text()),
        ("server log", host.path(SERVER_LOG).read_text(errors="replace")),
    ):
        assert BIND_PASSWORD not in text, where


def test_with_the_directory_down_ldap_logins_fail_root_and_sessions_go_on(deployment):
    host, directory = deployment.host, deployment.directory
    session = deployment.login_header(CAROL)
    directory.stop()
    try:
        log = LogTail(host, SERVER_LOG)
        started = time.monotonic()
        status = login_status(host, URL, CAROL.uid, CAROL.password)
        took = time.monotonic() - started
        said = log.new()
        assert status == 401, (status, took, said[-3000:])
        assert took < 30, took  # one pass over the pool (devpi-ldap alone would look for a server forever)
        assert "LDAP login of 'carol' failed, the directory does not answer" in said, said[-3000:]
        assert login_status(host, URL, "team", TEAM_PASSWORD) == 200  # local users are not held up
        assert login_status(host, URL, "root", ROOT_PASSWORD) == 200
        assert deployment.api("/team/dev/ldap-carol", session)[0] == 200
    finally:
        directory.resume()
    assert login_status(host, URL, CAROL.uid, CAROL.password) == 200


def test_a_directory_whose_certificate_the_ca_file_does_not_vouch_for_is_refused(deployment):
    host, directory = deployment.host, deployment.directory
    ca_file = host.path(COMPANY_CA)
    debians = host.path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    ca_file.write_bytes(debians)  # Debian's CAs, not the directory's
    try:
        assert login_status(host, URL, CAROL.uid, CAROL.password) == 401  # ldaps:// checks the certificate
    finally:
        ca_file.write_bytes(directory.ca_pem)
    assert login_status(host, URL, CAROL.uid, CAROL.password) == 200


def test_a_second_apply_changes_nothing(deployment):
    again = deployment.salt.apply("sentry")
    assert again.succeeded and not again.changed, again.changed
