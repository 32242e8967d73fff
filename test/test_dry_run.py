"""test=True is an honest dry run: it changes nothing anywhere, and what would fail fails.

One test host carries a deployment (a master with a bootstrap user and index).
A dry run with a changed pillar (the supervisor program file, the nginx site,
a new user) must plan those changes and leave supervisor, nginx, the server
and every file of theirs as they were. A state whose real run would fail
(root's password wrong, the server down where nothing in the run would start
it) fails in the dry run too, instead of reading as a change to come.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
from support.host_roots import new_host
from support.masterless import MasterlessSalt

pytestmark = pytest.mark.slow

ROOT_PASSWORD = "Dry-Run-Root-pw-41"
ALICE_PASSWORD = "Dry-Run-Alice-pw-43"
DORA_KEY = "dry_run:dora_password"  # a pillar key outside sentry: for states called one by one
URL = "http://127.0.0.1:3141"
SERVER_LOG = "/var/log/sentry/sentry-server.log"
# A program of someone else's, written but not yet loaded: `supervisorctl update` is theirs to run.
PENDING_PROGRAM = "/etc/supervisor/conf.d/dry-run-pending.conf"

# Runs inside the host with Debian's python: every path under the four folders, sorted.
FILES_SCRIPT = r"""
import json, os, stat

seen = {}
for top in ("/etc/supervisor", "/etc/nginx", "/etc/sentry", "/var/lib/sentry"):
    for root, dirs, files in os.walk(top):
        for path in [root] + [os.path.join(root, name) for name in dirs + files]:
            info = os.lstat(path)
            seen[path] = [oct(info.st_mode), f"{info.st_uid}:{info.st_gid}", info.st_size, info.st_mtime_ns]
print(json.dumps(seen, sort_keys=True))
"""

# What supervisord holds: the configuration it last read (reloadConfig replaces it), its processes.
SUPERVISOR_SCRIPT = r"""
import json, xmlrpc.client
from supervisor.xmlrpc import SupervisorTransport

transport = SupervisorTransport(None, None, "unix:///var/run/supervisor.sock")
api = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor
processes = [{k: v for k, v in p.items() if k not in ("now", "description")} for p in api.getAllProcessInfo()]
print(json.dumps({"pid": api.getPID(), "config": api.getAllConfigInfo(), "processes": processes}, sort_keys=True))
"""


def good_pillar(deb) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD}},
                "indexes": {"alice/dev": {"bases": ["root/pypi"]}},
            },
        },
        "dry_run": {"dora_password": "Dry-Run-Dora-pw-47"},
    }


def changed_pillar(deb, **sentry) -> dict:
    """The good pillar with ``sentry`` laid over it, key by key under each section."""
    pillar = good_pillar(deb)
    for section, values in sentry.items():
        pillar["sentry"].setdefault(section, {}).update(copy.deepcopy(values))
    return pillar


def start_server(host) -> None:
    """Start the stopped server; return once it has indexed what it found (devpi-web writes .indices then)."""
    indexed = f"grep -c \"Thread 'InitialQueueThread' ended\" {SERVER_LOG}"
    before = int(host.sh(indexed, check=False).stdout)
    host.run(["supervisorctl", "start", "sentry-server"])
    host.wait_for(f"test $({indexed}) -gt {before} && curl -fsS -o /dev/null {URL}/+api", timeout=90)


@pytest.fixture(scope="module")
def deployed(sentry_deb):
    with new_host("dry-run") as host:
        salt = MasterlessSalt(host, good_pillar(sentry_deb))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        yield salt


def single(salt: MasterlessSalt, function: str, *args: str) -> dict:
    """One state called alone (state.single), in test mode: its return."""
    called = salt.call("state.single", function, *args, "test=True", check=False)
    (ret,) = json.loads(called.stdout)["local"].values()
    return ret


def snapshot(host) -> dict:
    """Every file under /etc/supervisor, /etc/nginx, /etc/sentry, /var/lib/sentry; supervisor's, nginx's
    and the server's state."""
    nginx_master = host.path("/run/nginx.pid").read_text().strip()
    status = json.loads(host.run(["curl", "-fsS", "-H", "Accept: application/json", f"{URL}/+status"]).stdout)
    return {
        "files": json.loads(host.run(["/usr/bin/python3", "-c", FILES_SCRIPT]).stdout),
        "supervisor": json.loads(host.run(["/usr/bin/python3", "-c", SUPERVISOR_SCRIPT]).stdout),
        "avail": host.run(["supervisorctl", "avail"], check=False).stdout,
        "nginx": [nginx_master, host.run(["pgrep", "-P", nginx_master], check=False).stdout.split()],
        "serial": status["result"]["serial"],
    }


def differences(before: dict, after: dict) -> list[str]:
    found = [
        f"{path}: {before['files'].get(path)} -> {after['files'].get(path)}"
        for path in sorted(set(before["files"]) | set(after["files"]))
        if before["files"].get(path) != after["files"].get(path)
    ]
    return found + [
        f"{key}: {before[key]!r} -> {after[key]!r}" for key in before if key != "files" and before[key] != after[key]
    ]


def config_of(host, program: str = "sentry-server") -> dict:
    (config,) = [c for c in snapshot(host)["supervisor"]["config"] if c["name"] == program]
    return config


def test_a_wrong_root_password_fails_the_dry_run(deployed, sentry_deb):
    """Making a user or an index logs in as root first: with a wrong password the real run fails, so does this."""
    right = [
        single(deployed, "sentry_user.present", "name=dora", f"password_pillar={DORA_KEY}", f"url={URL}"),
        single(deployed, "sentry_index.present", "name=alice/staging", "bases=[alice/dev]", f"url={URL}"),
    ]
    assert [ret["result"] for ret in right] == [None, None], right
    deployed.set_pillar(changed_pillar(sentry_deb, server={"root_password": "Not-roots-pw-53"}))
    try:
        wrong = [
            single(deployed, "sentry_user.present", "name=dora", f"password_pillar={DORA_KEY}", f"url={URL}"),
            single(deployed, "sentry_index.present", "name=alice/staging", "bases=[alice/dev]", f"url={URL}"),
            single(deployed, "sentry_user.absent", "name=alice", f"url={URL}"),
        ]
    finally:
        deployed.set_pillar(good_pillar(sentry_deb))
    for ret in wrong:
        assert ret["result"] is False, ret
        assert "login as root" in ret["comment"], ret
    assert "Not-roots-pw-53" not in json.dumps(wrong)


def test_a_stopped_server_fails_the_dry_run_unless_the_run_would_start_it(deployed):
    host = deployed.host
    host.run(["supervisorctl", "stop", "sentry-server"])
    try:
        alone = [
            single(deployed, "sentry_user.present", "name=dora", f"password_pillar={DORA_KEY}", f"url={URL}"),
            single(deployed, "sentry_index.present", "name=alice/staging", "bases=[alice/dev]", f"url={URL}"),
            single(deployed, "sentry_index.bases_exist", "name=bases", 'indexes={"alice/dev": ["root/pypi"]}'),
        ]
        # The whole formula starts it again before the bootstrap: that is a plan, not a failure.
        planned = deployed.apply("sentry", "test=True")
    finally:
        start_server(host)
    for ret in alone:
        assert ret["result"] is False, ret
        assert f"sentry at {URL}" in ret["comment"] and "does not answer" in ret["comment"], ret
    assert planned.returncode == 0 and planned.failed == {}, planned.failed or planned.errors
    assert planned.by_id("sentry-supervisor-program-running")["changes"] == {
        "state": {"old": "STOPPED", "new": "RUNNING"}
    }
    assert {"sentry-bootstrap-user-alice", "sentry-bootstrap-index-alice/dev"} <= planned.would_change


def test_a_dry_run_changes_nothing_anywhere(deployed, sentry_deb):
    host = deployed.host
    host.path(PENDING_PROGRAM).write_text("[program:dry-run-pending]\ncommand = /bin/sleep 1000\n")
    deployed.set_pillar(
        changed_pillar(
            sentry_deb,
            supervisor={"startsecs": 6},
            nginx={"client_max_body_size": "2M"},
            bootstrap={"users": {"alice": {"password": ALICE_PASSWORD}, "erin": {"password": "Dry-Run-Erin-pw-59"}}},
        )
    )
    try:
        before = snapshot(host)
        planned = deployed.apply("sentry", "test=True")
        after = snapshot(host)
    finally:
        deployed.set_pillar(good_pillar(sentry_deb))
        host.path(PENDING_PROGRAM).unlink()
    assert differences(before, after) == []
    assert "dry-run-pending" not in after["avail"]
    assert planned.returncode == 0 and planned.failed == {}, planned.failed or planned.errors
    assert {
        "sentry-supervisor-program-file",
        "sentry-supervisor-program-running",
        "sentry-nginx-site-file",
        "sentry-nginx-service",
        "sentry-bootstrap-user-erin",
    } <= planned.would_change
    assert "would be restarted" in planned.by_id("sentry-supervisor-program-running")["comment"]


def test_a_program_file_supervisor_has_not_loaded_is_planned_and_left_unread(deployed, sentry_deb):
    """As a run interrupted between writing the file and updating supervisor leaves it."""
    host = deployed.host
    started = int(deployed.host.run(["supervisorctl", "pid", "sentry-server"]).stdout)
    time.sleep(1.1)  # supervisor tells start times in whole seconds
    deployed.set_pillar(changed_pillar(sentry_deb, supervisor={"startsecs": 7}))
    host.run(["sed", "-i", "s/^startsecs = 5$/startsecs = 7/", "/etc/supervisor/conf.d/sentry-server.conf"])
    try:
        planned = deployed.apply("sentry", "test=True")
        assert planned.returncode == 0 and planned.failed == {}, planned.failed or planned.errors
        assert planned.by_id("sentry-supervisor-program-file")["changes"] == {}  # the file is as the pillar says
        assert planned.by_id("sentry-supervisor-program-running")["changes"] == {"config": "changed"}
        assert config_of(host)["startsecs"] == 5  # not read by the dry run

        applied = deployed.apply("sentry")
        assert applied.succeeded, applied.failed
        assert set(applied.changed) == {"sentry-supervisor-program-running"}
        assert config_of(host)["startsecs"] == 7
        assert int(host.run(["supervisorctl", "pid", "sentry-server"]).stdout) != started
    finally:
        deployed.set_pillar(good_pillar(sentry_deb))
        restored = deployed.apply("sentry")
    assert restored.succeeded, restored.failed
    dry = deployed.apply("sentry", "test=True")
    assert dry.would_change == set() and dry.changed == {}, dry.would_change
