"""Secrets stay secret: pillar.example applied for real, then export and import, root's password
rotated from pillar, then a search for them.

The root passwords (old and new), the user password and the replication
secret must not show in any process's argv (sampled all along), in the
minion's debug log, in state output or returned data, or in any file others
may read. The secret file is 0600, the service user's, made once and kept.
A new root password in pillar is set on the server (a dry run first only
says so), the old one is refused afterwards, and a re-apply changes nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from support.argv import ArgvWatch
from support.client import login_status
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import REPO

pytestmark = pytest.mark.slow

ROOT_PASSWORD = f"Root-{secrets.token_urlsafe(12)}"
NEW_ROOT_PASSWORD = f"Root-new-{secrets.token_urlsafe(12)}"
ALICE_PASSWORD = f"Alice-{secrets.token_urlsafe(12)}"
SECRETFILE = "/var/lib/sentry/.secret"
MINION_LOG = f"{MasterlessSalt.CONF}/root/var/log/salt/minion"


def example_pillar(deb_inside: str, root_password: str = ROOT_PASSWORD) -> dict:
    """pillar.example as it is, but for the deb built here and passwords of this run."""
    pillar = yaml.safe_load((REPO / "pillar.example").read_text())
    pillar["sentry"]["package"]["deb"] = deb_inside
    pillar["sentry"]["server"]["root_password"] = root_password
    pillar["sentry"]["bootstrap"]["users"]["alice"]["password"] = ALICE_PASSWORD
    return pillar


def readable_by_others(host, relative: Path) -> bool:
    """The file and every folder above it let anyone in (as seen inside the host)."""
    inside = Path("/") / relative
    if not host.path(inside).stat().st_mode & stat.S_IROTH:
        return False
    return all(host.path(folder).stat().st_mode & stat.S_IXOTH for folder in inside.parents)


@pytest.fixture(scope="module")
def applied(sentry_deb):
    with new_host("secrets") as host:
        deb_inside = f"/srv/debs/{sentry_deb.name}"
        host.path("/srv/debs").mkdir(parents=True)
        shutil.copy(sentry_deb, host.path(deb_inside))
        salt = MasterlessSalt(host, example_pillar(deb_inside))
        host.run(["chmod", "0700", MasterlessSalt.CONF])  # the pillar's home, as script/deploy keeps it
        outputs = []
        with ArgvWatch() as argv:
            first = salt.apply("sentry")
            outputs += [first.stdout, first.stderr]
            assert first.succeeded, first.failed or first.errors
            secret_made = host.path(SECRETFILE).read_bytes()
            exported = salt.call("sentry_admin.export", "/var/lib/sentry/export-secrets-test")
            imported = salt.call("sentry_admin.import", "/var/lib/sentry/export-secrets-test", "move_aside=True")
            users = salt.call("sentry_admin.list_users")
            again = salt.apply("sentry")
            outputs += [run.stdout + run.stderr for run in (exported, imported, users, again)]
            salt.set_pillar(example_pillar(deb_inside, root_password=NEW_ROOT_PASSWORD))
            planned = salt.apply("sentry", "test=True")
            old_after_dry_run = login_status(host, "http://127.0.0.1", "root", ROOT_PASSWORD)
            rotated = salt.apply("sentry")
            after_rotation = salt.apply("sentry")
            outputs += [run.stdout + run.stderr for run in (planned, rotated, after_rotation)]
        logins = {
            "old after the dry run": old_after_dry_run,
            "old": login_status(host, "http://127.0.0.1", "root", ROOT_PASSWORD),
            "new": login_status(host, "http://127.0.0.1", "root", NEW_ROOT_PASSWORD),
        }
        yield {
            "planned": planned,
            "rotated": rotated,
            "after_rotation": after_rotation,
            "logins": logins,
            "host": host,
            "salt": salt,
            "argv": argv.seen,
            "outputs": outputs,
            "again": again,
            "users": users.stdout,
            "secret_made": secret_made,
        }


def secret_values(applied) -> dict[str, str]:
    return {
        "root password": ROOT_PASSWORD,
        "root's new password": NEW_ROOT_PASSWORD,
        "alice's password": ALICE_PASSWORD,
        "replication secret": applied["secret_made"].decode().strip(),
    }


def test_the_run_did_what_it_should(applied):
    assert applied["again"].succeeded and not applied["again"].changed, applied["again"].changed
    assert '"alice"' in applied["users"]
    assert len(applied["secret_made"].strip()) >= 32


ROTATION_ID = "sentry-bootstrap-root-password"
ROTATION = f"sentry_user_|-{ROTATION_ID}_|-root_|-root_password"


def test_a_new_root_password_in_pillar_is_set_and_the_old_one_refused(applied):
    planned = applied["planned"]
    assert planned.succeeded, planned.failed or planned.errors  # a dry run: nothing False
    assert planned.states[ROTATION]["result"] is None, planned.states[ROTATION]
    assert "would be set" in planned.states[ROTATION]["comment"]
    assert set(planned.changed) == {ROTATION_ID}, planned.changed
    assert applied["logins"]["old after the dry run"] == 200  # the dry run changed nothing
    rotated = applied["rotated"]
    assert rotated.succeeded, rotated.failed or rotated.errors
    assert set(rotated.changed) == {ROTATION_ID}, rotated.changed
    assert rotated.states[ROTATION]["changes"] == {"password": {"old": "<hidden>", "new": "<hidden>"}}
    assert "the old one is refused" in rotated.states[ROTATION]["comment"]
    assert applied["logins"]["old"] == 401
    assert applied["logins"]["new"] == 200
    again = applied["after_rotation"]
    assert again.succeeded and not again.changed, again.changed


def test_no_secret_in_any_command_line(applied):
    # The sampler proves something only if it caught the commands a secret could ride on.
    for flag in ("--init", "--export", "--import", "--port"):
        seen = [line for line in applied["argv"] if "sentry-server" in line and flag in line]
        assert seen, f"the sampler never saw sentry-server {flag}"
    assert [line for line in applied["argv"] if "devpi-passwd" in line], "the sampler never saw devpi-passwd"
    for what, value in secret_values(applied).items():
        assert not [line for line in applied["argv"] if value in line], what


def test_no_secret_in_state_output_returned_data_or_the_debug_log(applied):
    log = applied["host"].path(MINION_LOG).read_text(errors="replace")
    assert "[DEBUG" in log and "sentry_admin" in log, "the minion log is not at debug level"
    # Login tokens are the server's to make: no header carrying one may be logged.
    assert "X-Devpi-Auth" not in log and "x-devpi-auth" not in log.lower()
    for what, value in secret_values(applied).items():
        assert value not in log, f"{what} in the minion log"
        for output in applied["outputs"]:
            assert value not in output, f"{what} in salt-call output"
    assert not [output for output in applied["outputs"] if "devpi-auth" in output.lower()]


def test_no_secret_in_a_file_others_may_read(applied):
    host = applied["host"]
    values = {what: value.encode() for what, value in secret_values(applied).items()}
    leaks, looked_at = [], 0
    for root, _dirs, files in os.walk(host.changes):
        for name in files:
            relative = Path(root, name).relative_to(host.changes)
            if not host.path(Path("/") / relative).is_file() or not readable_by_others(host, relative):
                continue
            looked_at += 1
            content = host.path(Path("/") / relative).read_bytes()
            leaks += [f"/{relative}: {what}" for what, value in values.items() if value in content]
    assert looked_at > 20
    assert leaks == []


def test_the_secret_file_is_the_service_users_alone_and_kept(applied):
    host = applied["host"]
    info = host.path(SECRETFILE).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert host.run(["stat", "-c", "%U:%G", SECRETFILE]).stdout.strip() == "sentry:sentry"
    assert host.path(SECRETFILE).read_bytes() == applied["secret_made"]  # the re-apply kept it


RENDERINGS = (("state.show_sls", "sentry"), ("state.show_low_sls", "sentry"))


def test_no_secret_in_the_rendered_states(applied):
    """``state.show_sls`` and ``state.show_low_sls`` print every state's arguments, templates'
    context included, and a dry run at log level debug renders every file: no secret of any kind in any
    of it, nor in the minion's log.

    Each secret the pillar can hold, on the host of the deployment above (its modules are synced): root's
    password, a user's, the replication secret, LDAP's bind password, a proxy's login.
    """
    given = {
        "root password": ROOT_PASSWORD,
        "alice's password": ALICE_PASSWORD,
        "replication secret": f"Secret-{secrets.token_urlsafe(24)}",
        "LDAP bind password": f"Bind-{secrets.token_urlsafe(12)}",
        "proxy password": f"Proxy-{secrets.token_urlsafe(12)}",
    }
    pillar = yaml.safe_load((REPO / "pillar.example").read_text())
    sentry = pillar["sentry"]
    sentry["package"] = {"source": "repo"}
    sentry["server"].update({"root_password": given["root password"], "secret": given["replication secret"]})
    sentry["bootstrap"]["users"]["alice"]["password"] = given["alice's password"]
    sentry.setdefault("mirror", {})["https_proxy"] = f"http://ci:{given['proxy password']}@proxy.example.org:3128"
    sentry.setdefault("auth", {})["ldap"] = {
        "urls": ["ldap://ldap.example.org"],
        "user_template": "uid={username},ou=people,dc=example,dc=org",
        "bind_dn": "cn=sentry,dc=example,dc=org",
        "bind_password": given["LDAP bind password"],
    }
    salt = applied["salt"]
    original = salt.host.path(f"{MasterlessSalt.CONF}/pillar/test.sls").read_text()
    try:
        salt.set_pillar(pillar)
        shown = {function: salt.call(function, *args, check=False) for function, *args in RENDERINGS}
        # a dry run renders every file (the program file with the proxy's real login too), logging at debug
        planned = salt.call("state.apply", "sentry", "test=True", "--log-level=debug", check=False)
    finally:
        salt.host.path(f"{MasterlessSalt.CONF}/pillar/test.sls").write_text(original)
    for function, output in shown.items():
        said = output.stdout + output.stderr
        assert output.returncode == 0 and "sentry-supervisor-program-file" in output.stdout, said
        assert "http://****@proxy.example.org:3128" in output.stdout  # masked where a template is handed the proxy
        for what, value in given.items():
            assert value not in said, f"{what} in {function}"
    assert "sentry-supervisor-program-file" in planned.stdout and "[DEBUG" in planned.stderr, planned.stderr[-2000:]
    log = salt.host.path(MINION_LOG).read_text(errors="replace")
    for what, value in given.items():
        assert value not in planned.stdout + planned.stderr, f"{what} in a dry run's output or its debug log"
        assert value not in log, f"{what} in the minion's log"
