"""A master, two replicas and an nginx front, deployed by one salt-master with ``salt '*' state.apply``.

Four test hosts on the bridge, each with a salt-minion (support/cluster.py): the
master node and the replica nodes get ``sentry`` from the local apt repository
(support/aptrepo.py), the front gets ``sentry.front``. Replicas follow the master
through the master node's nginx. A wheel uploaded through the front reaches
both replicas, installs through the front, and still downloads through it while
the master node's nginx is stopped. The front reads release files from every
node in sync and private pages from the master; a replica whose server stops
loses its in-sync flag and gets none of the front's reads. Root's new password
in the master's pillar is set on it and reaches the replicas.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from pathlib import Path

import pytest
from support.aptrepo import use_apt_repo
from support.client import login_status, pip_install, sentry_client
from support.cluster import MINION_ROOT, SaltCluster, changed, failed
from support.cluster_deployment import (
    ALICE_PASSWORD,
    FRONT,
    NODES,
    PRIMARY,
    REPLICAS,
    ROOT_PASSWORD,
    SECRET,
    STATE_TOP,
    cluster_pillars,
)
from support.debs import deb_version
from support.hosts import TestHost
from support.upstream import LogTail
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

SERVERDIR = "/var/lib/sentry/data"
WHEEL_NAME, WHEEL_VERSION = "cluster-probe", "1.0"
REPLICATION_TIMEOUT = 90
IN_SYNC_FLAG = "/var/lib/sentry/sentry-server.in-sync"  # a replica's watcher keeps it while in sync
NGINX_LOG = "/var/log/nginx/access.log"
NEW_ROOT_PASSWORD = "Cluster-Root-new-pw-31"
BOB_PASSWORD = "Cluster-Bob-pw-37"


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


def front_requests(log: LogTail, front_address: str, path: str) -> list[int]:
    """The statuses a node's nginx gave the front's requests for ``path`` since ``log`` was made."""
    pattern = rf'^{re.escape(front_address)} .*"GET {re.escape(path)} HTTP/[0-9.]+" (\d+) '
    return [int(status) for status in re.findall(pattern, log.new(), re.MULTILINE)]


def fetch_many(deployed: Deployed, path: str, times: int) -> None:
    """``times`` GETs through the front, one after the other; each must succeed."""
    deployed.hosts[FRONT].sh(
        f"for n in $(seq {times}); do curl -fsS --max-time 30 -o /dev/null {deployed.front_url}{path} || exit 1; done"
    )


def test_files_are_read_from_every_node_in_sync_private_pages_from_the_master(deployed, uploaded):
    for replica in REPLICAS:  # each replica's watcher says it has what the master has
        deployed.hosts[replica].wait_for(f"test -f {IN_SYNC_FLAG}", timeout=REPLICATION_TIMEOUT)
    assert (
        "ERROR (no such process)"
        in deployed.hosts[PRIMARY].sh("supervisorctl status sentry-server-in-sync", check=False).stdout
    )  # the master has no watcher
    front_address = deployed.hosts[FRONT].address
    page = f"/alice/dev/+simple/{WHEEL_NAME}/"
    logs = {node: LogTail(deployed.hosts[node], NGINX_LOG) for node in NODES}
    fetch_many(deployed, uploaded, 30)
    fetch_many(deployed, page, 10)
    files = {node: front_requests(logs[node], front_address, uploaded) for node in NODES}
    pages = {node: front_requests(logs[node], front_address, page) for node in NODES}
    assert all(statuses and set(statuses) == {200} for statuses in files.values()), files
    assert sum(len(statuses) for statuses in files.values()) == 30, files
    assert pages[PRIMARY] == [200] * 10 and not any(pages[replica] for replica in REPLICAS), pages


def test_a_replica_out_of_sync_gets_none_of_the_fronts_reads(deployed, uploaded):
    host = deployed.hosts[REPLICAS[0]]
    host.wait_for(f"test -f {IN_SYNC_FLAG}", timeout=REPLICATION_TIMEOUT)
    host.run(["supervisorctl", "stop", "sentry-server"])
    try:
        host.wait_for(f"! test -f {IN_SYNC_FLAG}", timeout=30)  # its watcher saw it go
        log = LogTail(host, NGINX_LOG)
        fetch_many(deployed, uploaded, 20)  # none fails: the front asks another node
        statuses = front_requests(log, deployed.hosts[FRONT].address, uploaded)
        assert 200 not in statuses and set(statuses) <= {503}, statuses
        # Other clients still get what its nginx has on disk.
        direct = deployed.hosts[FRONT].run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{host.address}{uploaded}"]
        )
        assert direct.stdout == "200", direct.stdout
    finally:
        host.run(["supervisorctl", "start", "sentry-server"])
    host.wait_for(f"test -f {IN_SYNC_FLAG}", timeout=REPLICATION_TIMEOUT)


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


def test_root_password_rotates_on_the_master_and_reaches_the_replicas(deployed, uploaded):
    """Root's new password in the master's pillar, with a new user in the same change: a dry run plans both
    (the user's state does not fail on the old password), the apply sets it; replicas copy it."""
    cluster, hosts = deployed.cluster, deployed.hosts
    pillar = copy.deepcopy(cluster.pillars[PRIMARY])
    pillar["sentry"]["server"]["root_password"] = NEW_ROOT_PASSWORD
    pillar["sentry"]["bootstrap"]["users"]["bob"] = {"password": BOB_PASSWORD}
    cluster.set_pillar(PRIMARY, pillar)
    planned = cluster.apply(PRIMARY, "test=True")[PRIMARY]
    assert not failed(planned), failed(planned)
    assert {"sentry-bootstrap-root-password", "sentry-bootstrap-user-bob"} <= set(changed(planned)), changed(planned)
    client = hosts[FRONT]
    assert login_status(client, deployed.front_url, "root", ROOT_PASSWORD) == 200  # a dry run changes nothing

    rotated = deployed.cluster.apply("*")
    assert {minion_id: failed(states) for minion_id, states in rotated.items() if failed(states)} == {}
    assert set(changed(rotated[PRIMARY])) == {"sentry-bootstrap-root-password", "sentry-bootstrap-user-bob"}
    assert {minion_id for minion_id, states in rotated.items() if changed(states)} == {PRIMARY}
    assert login_status(client, deployed.front_url, "root", ROOT_PASSWORD) == 401
    assert login_status(client, deployed.front_url, "root", NEW_ROOT_PASSWORD) == 200
    for replica in REPLICAS:  # a replica logs root in with what it copied from the master
        url = f"http://{hosts[replica].address}"
        deadline = time.monotonic() + REPLICATION_TIMEOUT
        while login_status(client, url, "root", NEW_ROOT_PASSWORD) != 200:
            assert time.monotonic() < deadline, f"{replica} never took root's new password"
            time.sleep(1)
        assert login_status(client, url, "root", ROOT_PASSWORD) == 401, replica
    assert deployed.fetch(f"{deployed.front_url}{uploaded}")  # the front still serves
    secrets_shown = [
        minion_id
        for minion_id, states in rotated.items()
        if NEW_ROOT_PASSWORD in json.dumps(states) or BOB_PASSWORD in json.dumps(states)
    ]
    assert secrets_shown == []
    minion_log = hosts[PRIMARY].path(f"{MINION_ROOT}/var/log/salt/minion").read_text(errors="replace")
    assert NEW_ROOT_PASSWORD not in minion_log and ROOT_PASSWORD not in minion_log

    again = deployed.cluster.apply("*")
    assert {minion_id: changed(states) for minion_id, states in again.items() if changed(states)} == {}
