"""A master, two replicas and an nginx front, deployed by one salt-master with ``salt '*' state.apply``.

Four test hosts on the bridge, each with a salt-minion (support/cluster.py): the
master node and the replica nodes get ``sentry`` from the local apt repository
(support/aptrepo.py), the front gets ``sentry.front``. Replicas follow the master
through the master node's nginx. A wheel uploaded through the front reaches
both replicas, installs through the front, and still downloads through it while
the master node's nginx is stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from support.aptrepo import use_apt_repo
from support.client import pip_install, sentry_client
from support.cluster import SaltCluster, changed, failed
from support.cluster_deployment import (
    ALICE_PASSWORD,
    FRONT,
    NODES,
    PRIMARY,
    REPLICAS,
    SECRET,
    STATE_TOP,
    cluster_pillars,
)
from support.debs import deb_version
from support.hosts import TestHost
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

SERVERDIR = "/var/lib/sentry/data"
WHEEL_NAME, WHEEL_VERSION = "cluster-probe", "1.0"
REPLICATION_TIMEOUT = 90


class Deployed:
    """The cluster with its hosts, and what the first state.apply returned."""

    def __init__(self, cluster: SaltCluster, hosts: dict[str, TestHost]) -> None:
        self.cluster, self.hosts = cluster, hosts
        self.front_url = f"http://{hosts[FRONT].address}"
        self.first: dict[str, dict] = {}

    def fetch(self, url: str, *options: str) -> bytes:
        """GET from the front host (a client on the network); the body as bytes."""
        front = self.hosts[FRONT]
        front.run(["curl", "-fsS", "--max-time", "30", *options, "-o", "/tmp/fetched", url])
        return front.path("/tmp/fetched").read_bytes()


@pytest.fixture(scope="module")
def deployed(salt_factories, apt_repo, old_sentry_deb, tmp_path_factory):
    with SaltCluster(salt_factories, tmp_path_factory.mktemp("cluster"), state_top=STATE_TOP) as cluster:
        # Hosts first: the pillars name their addresses.
        hosts = cluster.add_minions({minion_id: {} for minion_id in (*NODES, FRONT)})
        for node in NODES:
            use_apt_repo(hosts[node], apt_repo)
        addresses = {minion_id: host.address for minion_id, host in hosts.items()}
        for minion_id, pillar in cluster_pillars(addresses, deb_version(old_sentry_deb)).items():
            cluster.set_pillar(minion_id, pillar)
        deployment = Deployed(cluster, hosts)
        started = time.monotonic()
        deployment.first = cluster.apply("*")
        print(f"first salt '*' state.apply: {time.monotonic() - started:.1f}s")
        yield deployment


@pytest.fixture(scope="module")
def probe_wheel(tmp_path_factory) -> Path:
    return make_wheel(tmp_path_factory.mktemp("cluster-wheels"), WHEEL_NAME, WHEEL_VERSION, payload="c" * 2048)


@pytest.fixture(scope="module")
def uploaded(deployed, probe_wheel) -> str:
    """The wheel's path on the server (/alice/dev/+f/...), uploaded through the front by alice."""
    client = deployed.hosts[PRIMARY]  # any host with the sentry client; it talks to the front only
    client.path("/tmp").joinpath(probe_wheel.name).write_bytes(probe_wheel.read_bytes())
    sentry_client(client, "use", f"{deployed.front_url}/")
    sentry_client(client, "login", "alice", password=ALICE_PASSWORD)
    sentry_client(client, "use", "alice/dev")
    sentry_client(client, "upload", f"/tmp/{probe_wheel.name}")
    project = json.loads(
        deployed.fetch(f"{deployed.front_url}/alice/dev/{WHEEL_NAME}", "-H", "Accept: application/json")
    )
    (link,) = project["result"][WHEEL_VERSION]["+links"]
    assert link["href"].startswith(f"{deployed.front_url}/alice/dev/+f/"), link
    return link["href"].removeprefix(deployed.front_url)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_first_apply_succeeds_on_all_four(deployed):
    first = deployed.first
    assert set(first) == {*NODES, FRONT}
    for minion_id, states in first.items():
        assert states, f"{minion_id}: no states ran"
        assert not failed(states), (minion_id, failed(states))
    for node in NODES:
        for state_id in ("sentry-package-installed", "sentry-server-initialised", "sentry-supervisor-program-running"):
            assert state_id in changed(first[node]), (node, state_id)
    assert "sentry-bootstrap-index-alice/dev" in changed(first[PRIMARY])
    assert "sentry-front-site-file" in changed(first[FRONT])


def test_upload_through_the_front_reaches_both_replicas(deployed, uploaded, probe_wheel):
    for replica in REPLICAS:
        host = deployed.hosts[replica]
        # On the replica's own disk: replicated, not fetched from the master on demand.
        host.wait_for(f"test -f {SERVERDIR}/+files{uploaded}", timeout=REPLICATION_TIMEOUT)
        fetched = deployed.fetch(f"http://{host.address}{uploaded}")
        assert sha256(fetched) == sha256(probe_wheel.read_bytes()), replica


def test_pip_installs_it_through_the_front(deployed, uploaded):
    front = deployed.hosts[FRONT]
    pip_install(
        front, f"{deployed.front_url}/alice/dev/+simple/", f"{WHEEL_NAME}=={WHEEL_VERSION}", "/tmp/cluster-site"
    )
    assert front.path("/tmp/cluster-site/cluster_probe/__init__.py").exists()


def test_reads_go_to_a_replica_while_the_master_nginx_is_stopped(deployed, uploaded, probe_wheel):
    primary, front = deployed.hosts[PRIMARY], deployed.hosts[FRONT]
    for replica in REPLICAS:
        deployed.hosts[replica].wait_for(f"test -f {SERVERDIR}/+files{uploaded}", timeout=REPLICATION_TIMEOUT)
    primary.run(["service", "nginx", "stop"])
    try:
        refused = front.run(["curl", "-sS", "--max-time", "5", f"http://{primary.address}/"], check=False)
        assert refused.returncode != 0, "the master node's nginx still answers"
        fetched = deployed.fetch(f"{deployed.front_url}{uploaded}")
        assert sha256(fetched) == sha256(probe_wheel.read_bytes())
        simple = deployed.fetch(f"{deployed.front_url}/alice/dev/+simple/{WHEEL_NAME}/").decode()
        assert uploaded.rsplit("/", 1)[-1] in simple, simple
    finally:
        primary.run(["service", "nginx", "start"])


def test_second_apply_changes_nothing_anywhere(deployed):
    started = time.monotonic()
    again = deployed.cluster.apply("*")
    print(f"second salt '*' state.apply: {time.monotonic() - started:.1f}s")
    assert set(again) == {*NODES, FRONT}
    assert {minion_id: failed(states) for minion_id, states in again.items() if failed(states)} == {}
    assert {minion_id: changed(states) for minion_id, states in again.items() if changed(states)} == {}


def test_the_replication_secret_is_the_same_private_file_on_every_node(deployed):
    for node in NODES:
        host = deployed.hosts[node]
        listed = host.run(["stat", "-c", "%a %U:%G", "/var/lib/sentry/.secret"]).stdout.split()
        assert listed == ["600", "sentry:sentry"], node
        assert host.path("/var/lib/sentry/.secret").read_text().strip() == SECRET, node
