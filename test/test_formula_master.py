"""`salt MINION state.apply sentry` through a real salt-master and a real salt-minion.

The master (pytest-salt-factories) runs in the machine's own namespace and
listens on the test bridge; the minion runs inside a test host (its own
filesystem view and network address) and reaches the master over the bridge.
The formula and the pillar are served by the master only.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO, new_host
from hosts import BRIDGE_ADDRESS, TestHost, host_address

pytestmark = pytest.mark.slow

MINION_ID = "sentry-master-mm"
MINION_CONF = "/etc/salt-minion-test"
MINION_ROOT = "/srv/salt-minion-test"
ROOT_PASSWORD = "Master-Root-pw-1"
TITLE = "Master Deployed"
APPLY_TIMEOUT = 900


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Salt-factories' own files (generated scripts) in pytest's temporary folders, not loose in /tmp."""
    return {"root_dir": tmp_path_factory.mktemp("salt-factories"), "slow_stop": False}


def minion_pillar(deb) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "theme": {"title": TITLE},
        }
    }


def write_pillar_tree(root, deb):
    root.mkdir()
    (root / "top.sls").write_text(yaml.safe_dump({"base": {MINION_ID: ["sentry"]}}))
    (root / "sentry.sls").write_text(yaml.safe_dump(minion_pillar(deb)))
    return root


def no_route_out(host: TestHost) -> None:
    """Only the bridge's subnet is reachable; anything else fails at once, as on a host without an address.

    Through the default route via the bridge, packets for elsewhere are dropped
    silently: apt-get update (pkg.installed refreshes the package database once
    per minion start) and DNS would each wait out their timeouts.
    """
    host.run(["ip", "route", "replace", "unreachable", "default"])


def start_minion(host: TestHost, master) -> None:
    """A salt-minion daemon inside ``host``, pointed at ``master`` over the bridge."""
    conf = host.path(MINION_CONF)
    conf.mkdir(parents=True)
    (conf / "minion").write_text(
        yaml.safe_dump(
            {
                "id": MINION_ID,
                "master": BRIDGE_ADDRESS,
                "master_port": master.config["ret_port"],
                "publish_port": master.config["publish_port"],
                "root_dir": MINION_ROOT,
                "log_level_logfile": "debug",
                "acceptance_wait_time": 1,
            }
        )
    )
    salt_minion = REPO / ".venv" / "bin" / "salt-minion"
    host.sh(f"setsid {salt_minion} -c {MINION_CONF} -d </dev/null >/dev/null 2>&1", timeout=60)


def minion_log(host: TestHost) -> str:
    log = host.path(f"{MINION_ROOT}/var/log/salt/minion")
    return log.read_text(errors="replace")[-5000:] if log.exists() else "(no minion log)"


def wait_for_minion(host: TestHost, master, salt_cli, timeout: float = 90) -> None:
    """Until the master has the minion's key and the minion answers test.ping."""
    accepted = Path(master.config["pki_dir"]) / "minions" / MINION_ID
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepted.exists():
            ret = salt_cli.run("test.ping", minion_tgt=MINION_ID, _timeout=5)
            if ret.returncode == 0 and ret.data is True:
                return
        time.sleep(0.5)
    pytest.fail(f"minion {MINION_ID} did not answer the master within {timeout}s\n{minion_log(host)}")


def apply_sentry(salt_cli) -> tuple[dict, float]:
    """``state.apply sentry`` from the master: the minion's state results and the seconds it took."""
    started = time.monotonic()
    ret = salt_cli.run("state.apply", "sentry", "--out=json", minion_tgt=MINION_ID, _timeout=APPLY_TIMEOUT)
    took = time.monotonic() - started
    assert isinstance(ret.data, dict), (
        f"no state results (render error?): rc={ret.returncode}\n{ret.stdout}\n{ret.stderr}"
    )
    return ret.data, took


def failed(states: dict) -> dict[str, str]:
    return {key: result["comment"] for key, result in states.items() if result["result"] is False}


def changed(states: dict) -> dict[str, dict]:
    return {key.split("_|-")[1]: result["changes"] for key, result in states.items() if result["changes"]}


def fetch_from_outside(url: str, accept: str = "*/*") -> str:
    """GET from this test process (the machine's own namespace), bypassing any configured proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 (fixed http URL)
    with opener.open(request, timeout=30) as response:
        return response.read().decode()


def test_state_apply_from_a_master_deploys_sentry_on_a_minion_host(salt_factories, sentry_deb, tmp_path):
    address = host_address(1)
    with new_host("mm", address=address) as host:
        host.prepare_services()
        no_route_out(host)
        master = salt_factories.salt_master_daemon(
            "sentry-master",
            defaults={"root_dir": tmp_path / "m"},
            overrides={
                "interface": BRIDGE_ADDRESS,
                "auto_accept": True,
                "file_roots": {"base": [str(REPO)]},
                # Salt's own default (salt-factories sets 0): listing the repo, .venv included,
                # takes a second, and every directory synced or recursed asks for the list again.
                "fileserver_list_cache_time": 20,
                "pillar_roots": {"base": [str(write_pillar_tree(tmp_path / "pillar", sentry_deb))]},
            },
        )
        with master.started(start_timeout=120):
            salt_cli = master.salt_cli()
            start_minion(host, master)
            wait_for_minion(host, master, salt_cli)

            synced = salt_cli.run("saltutil.sync_all", minion_tgt=MINION_ID, _timeout=120)
            assert synced.returncode == 0, synced.stdout + synced.stderr
            assert "states.sentry_program" in synced.data["states"], synced.data

            first, first_took = apply_sentry(salt_cli)
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

            again, again_took = apply_sentry(salt_cli)
            print(f"second state.apply sentry through the master: {again_took:.1f}s")
            assert not failed(again), failed(again)
            assert changed(again) == {}
