"""A host that boots systemd (issue 27, items 1 to 3): deployed through a salt-master, then rebooted.

The host is support/booted.py's: systemd-nspawn boots the clean Debian 12 root
of the systemd kind, so systemd is its PID 1, as on the VMs and servers most
operators run. A salt-minion in it joins a real salt-master on the test
bridge. The formula takes Salt's systemd path there: supervisor and nginx,
stopped and disabled beforehand, are started and enabled through systemd; a
second apply changes nothing and a dry run plans nothing. alice uploads a wheel and pip installs it back
through nginx. After ``systemctl reboot`` sentry serves again with no apply:
the same data, alice's login, the same wheel through nginx.
"""

from __future__ import annotations

import time

import pytest
from support.client import login_status, pip_install, sentry_client
from support.cluster import SaltCluster, changed, failed
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

MINION = "booted-1"
ROOT_PASSWORD = "Booted-root-pw-7"
ALICE_PASSWORD = "Booted-alice-pw-8"
SERVICES = ("supervisor", "nginx")


def pillar(deb) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD}},
                "indexes": {"alice/dev": {"bases": [], "acl_upload": ["alice"]}},
            },
        }
    }


def systemctl(host, *args: str) -> str:
    return host.run(["systemctl", *args], check=False).stdout.strip()


@pytest.fixture(scope="module")
def deployed(salt_factories, sentry_deb, tmp_path_factory):
    with SaltCluster(salt_factories, tmp_path_factory.mktemp("booted"), master_id="sentry-booted",
                     first_host_number=80) as cluster:  # fmt: skip
        host = cluster.add_minion(MINION, pillar(sentry_deb), kind="booted")
        assert systemctl(host, "is-system-running") in ("running", "degraded")
        assert cluster.salt(MINION, "sentry_service.init_system").data[MINION] == "systemd"
        # Debian's packages enable and start what they install; a host may have them off, and the formula
        # must not count on either: both stopped and disabled, the apply starts and enables them.
        host.run(["systemctl", "disable", "--now", *SERVICES])
        first = cluster.apply(MINION, "sentry")[MINION]
        yield cluster, host, first


def test_the_formula_takes_systemds_path_and_enables_what_it_starts(deployed):
    _, host, first = deployed
    assert not failed(first), failed(first)
    assert {"sentry-server-initialised", "sentry-supervisor-service", "sentry-nginx-service"} <= set(changed(first))
    for service in SERVICES:
        assert systemctl(host, "is-enabled", service) == "enabled", service
        assert systemctl(host, "is-active", service) == "active", service
    host.wait_for("curl -fsS -o /dev/null http://localhost/+api", timeout=60)


def test_a_second_apply_changes_nothing_and_a_dry_run_plans_nothing(deployed):
    cluster, host, _ = deployed
    for args in ((), ("test=True",)):
        again = cluster.apply(MINION, "sentry", *args)[MINION]
        assert changed(again) == {}, (args, changed(again))
        assert not [key for key, result in again.items() if result["result"] is None], args
    assert all(systemctl(host, "is-active", service) == "active" for service in SERVICES)


def test_after_a_reboot_it_serves_the_same_data_with_no_apply(deployed, tmp_path):
    host = deployed[1]
    wheel = make_wheel(tmp_path, "booted-probe", "1.0", payload="before the reboot")
    host.path("/tmp/wheels").mkdir(exist_ok=True)
    (host.path("/tmp/wheels") / wheel.name).write_bytes(wheel.read_bytes())
    sentry_client(host, "use", "http://localhost/alice/dev")
    sentry_client(host, "login", "alice", password=ALICE_PASSWORD)
    sentry_client(host, "upload", f"/tmp/wheels/{wheel.name}")
    pip_install(host, "http://localhost/alice/dev/+simple/", "booted-probe==1.0", "/tmp/before")
    serverdir_uuid = host.path("/var/lib/sentry/data/.nodeinfo").read_text()

    started = time.monotonic()
    boots = host.boots
    host.reboot()
    booted = time.monotonic() - started
    assert host.boots == boots + 1
    host.wait_for("curl -fsS -o /dev/null http://localhost/+api", timeout=120)
    print(f"\nreboot to the system's boot: {booted:.1f}s; to sentry serving: {time.monotonic() - started:.1f}s")
    for service in SERVICES:
        assert systemctl(host, "is-active", service) == "active", service
    assert host.path("/var/lib/sentry/data/.nodeinfo").read_text() == serverdir_uuid
    assert login_status(host, "http://localhost", "alice", ALICE_PASSWORD) == 200
    pip_install(host, "http://localhost/alice/dev/+simple/", "booted-probe==1.0", "/tmp/after")
    installed = host.path("/tmp/after/booted_probe/__init__.py").read_text()
    assert installed.endswith("PAYLOAD = 'before the reboot'\n")
