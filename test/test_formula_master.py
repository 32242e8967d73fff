"""`salt MINION state.apply sentry` through a real salt-master and a real salt-minion.

The master (pytest-salt-factories) runs in the machine's own namespace and
listens on the test bridge; the minion runs inside a test host (its own
filesystem view and network address) and reaches the master over the bridge.
The formula and the pillar are served by the master only (see support/cluster.py).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from support.cluster import SaltCluster, changed, failed
from support.hosts import host_address

pytestmark = pytest.mark.slow

MINION_ID = "sentry-master-mm"
ROOT_PASSWORD = "Master-Root-pw-1"
TITLE = "Master Deployed"


def minion_pillar(deb) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "theme": {"title": TITLE},
        }
    }


def apply_sentry(cluster: SaltCluster) -> tuple[dict, float]:
    """``state.apply sentry`` from the master: the minion's state results and the seconds it took."""
    started = time.monotonic()
    states = cluster.apply(MINION_ID, "sentry")[MINION_ID]
    return states, time.monotonic() - started


def fetch_from_outside(url: str, accept: str = "*/*") -> str:
    """GET from this test process (the machine's own namespace), bypassing any configured proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 (fixed http URL)
    with opener.open(request, timeout=30) as response:
        return response.read().decode()


def test_state_apply_from_a_master_deploys_sentry_on_a_minion_host(salt_factories, sentry_deb, tmp_path):
    with SaltCluster(salt_factories, tmp_path, master_id="sentry-master", first_host_number=1) as cluster:
        host = cluster.add_minion(MINION_ID, minion_pillar(sentry_deb))
        address = host_address(1)
        assert "states.sentry_program" in cluster.synced[MINION_ID]["states"], cluster.synced

        first, first_took = apply_sentry(cluster)
        print(f"first state.apply sentry through the master: {first_took:.1f}s")
        assert first, "no states ran"
        assert not failed(first), failed(first)
        for state_id in ("sentry-package-installed", "sentry-server-initialised", "sentry-nginx-site-file"):
            assert state_id in changed(first), state_id

        api = host.run(["curl", "-s", "-H", "Accept: application/json", "http://127.0.0.1/+api"]).stdout
        assert "result" in json.loads(api), api
        page = host.run(["curl", "-s", "http://127.0.0.1/"]).stdout
        assert TITLE in page, page[:2000]

        outside = json.loads(fetch_from_outside(f"http://{address}/+api", accept="application/json"))
        assert "result" in outside, outside
        assert TITLE in fetch_from_outside(f"http://{address}/")

        again, again_took = apply_sentry(cluster)
        print(f"second state.apply sentry through the master: {again_took:.1f}s")
        assert not failed(again), failed(again)
        assert changed(again) == {}

        # The upgrade's plan, asked of the master's runner: what would go, and how; nothing changes.
        planned = cluster.salt_run("sentry_upgrade.plan", "version=9.9.9-1", f"master={MINION_ID}")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        plan = planned.data
        assert not plan["error"] and plan["master"] == MINION_ID and plan["master_pending"], plan
        assert plan["steps"][-2:] == ["sentry-upgrade-master", "sentry-upgrade-summary"], plan["steps"]
        assert plan["reads_elsewhere"]["master"] is False

        # A master without the formula's runner: the orchestration says what to run, and runs nothing.
        runner = Path(cluster.master.config["extension_modules"], "runners", "sentry_upgrade.py")
        runner.unlink()
        refused = cluster.orchestrate("sentry.upgrade", pillar={"sentry": {"upgrade": {
            "version": "9.9.9-1", "master": MINION_ID}}})  # fmt: skip
        assert refused.returncode != 0
        assert "run 'salt-run saltutil.sync_runners' once" in refused.stdout + refused.stderr, refused.stdout
        assert cluster.salt_run("saltutil.sync_runners").returncode == 0
        assert runner.exists()
