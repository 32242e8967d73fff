"""A fleet from one master (issue 14): ten hosts, one ``salt 'fleet-*' state.apply sentry``.

Ten minions in test hosts of their own under one salt-master, of mixed Salt
releases as real fleets are: six run 3008 (the master's), two 3007 and two
3006 LTS (each from its own venv, made by script/bootstrap test from
test/salt-minions/<version>.lock). One apply deploys sentry on all of them;
each answers through its own nginx from outside, and the formula's execution
modules answer on each (``sentry_health.brief``: its serial, uuid, users and
indexes); a second apply changes nothing anywhere.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from support.cluster import SaltCluster, changed, failed

pytestmark = pytest.mark.slow

TITLE = "Fleet packages"
# minion id -> the Salt release its minion runs ("" is the master's, 3008)
OLDER_SALT = {7: "3007", 8: "3007", 9: "3006", 10: "3006"}
FLEET = {f"fleet-{number:02d}": OLDER_SALT.get(number, "") for number in range(1, 11)}


def fleet_pillar(deb, number: int) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": f"Fleet-root-pw-{number}", "offline_mode": True},
            "theme": {"title": f"{TITLE} {number}"},
        }
    }


def answers_from_outside(address: str, path: str):
    """GET ``path`` through the host's nginx from this process: /+api's result, or a page's text."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    accept = "application/json" if path == "/+api" else "text/html"
    request = urllib.request.Request(f"http://{address}{path}", headers={"Accept": accept})
    with opener.open(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text)["result"] if path == "/+api" else text


def test_one_apply_deploys_ten_hosts_of_mixed_salt_releases(salt_factories, sentry_deb, tmp_path):
    with SaltCluster(salt_factories, tmp_path, master_id="sentry-fleet") as cluster:
        hosts = cluster.add_minions(
            {minion: fleet_pillar(sentry_deb, number) for number, minion in enumerate(FLEET, start=1)},
            salt_versions={minion: version for minion, version in FLEET.items() if version},
        )
        versions = cluster.salt("fleet-*", "test.version", timeout=60).data
        for minion, version in FLEET.items():
            assert versions[minion].startswith(version or "3008"), versions

        started = time.monotonic()
        first = cluster.apply("fleet-*", "sentry")
        print(f"\nfirst state.apply sentry on {len(FLEET)} hosts: {time.monotonic() - started:.1f}s")
        for minion in FLEET:
            assert not failed(first[minion]), (minion, failed(first[minion]))
            assert "sentry-server-initialised" in changed(first[minion]), minion

        for number, (minion, host) in enumerate(hosts.items(), start=1):
            assert answers_from_outside(host.address, "/+api")["login"] == f"http://{host.address}/+login", minion
            assert f"{TITLE} {number}<" in answers_from_outside(host.address, "/"), minion  # its own pillar
        brief = cluster.salt("fleet-*", "sentry_health.brief", timeout=120)
        for minion in FLEET:
            said = brief.data[minion]
            assert isinstance(said, dict) and said.get("uuid") and "root" in said.get("root", {}), (minion, said)

        started = time.monotonic()
        again = cluster.apply("fleet-*", "sentry")
        print(f"second state.apply sentry on {len(FLEET)} hosts: {time.monotonic() - started:.1f}s")
        for minion in FLEET:
            assert not failed(again[minion]) and changed(again[minion]) == {}, (minion, changed(again[minion]))
