"""``salt-run state.orchestrate sentry.upgrade``: a master, two replicas and a front, old deb to new.

The cluster of test_cluster.py (four test hosts, each its own minion, a real
salt-master) is deployed at the older sentry version with users, indexes and
release files; then the orchestration upgrades it while a reader fetches a
known file through the front and a writer creates users through it.
A corrupted release file on the master makes the first attempt fail and roll
back; in place, so does a health check that fails past the stop; then the
upgrade goes through; a second run changes nothing.

The minions run mixed Salt releases, as fleets do: in one run the master
runs 3006 LTS and a replica 3007, in the other the master 3007 and a replica
and the front 3006 (the rest 3008, the master's).

Twice, one cluster each: with ``method: auto`` (6.14 -> 6.20 share devpi's
database version, so master and replicas go in place: snapshot, install,
start; devpi-fsck, run while the master still serves, catches the corrupt
file before anything changes) and with ``method: export`` (export and
import; the import catches it; replicas are remade).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.aptrepo import use_apt_repo
from support.client import sentry_client, write_window
from support.cluster import SaltCluster, failed
from support.cluster_deployment import (
    ALICE_PASSWORD,
    FRONT,
    NODES,
    PRIMARY,
    REPLICAS,
    ROOT_PASSWORD,
    STATE_TOP,
    cluster_pillars,
)
from support.debs import deb_version
from support.server import rewrite_uuid, wait_for_step
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

SERVERDIR = "/var/lib/sentry/data"
BOB_PASSWORD = "Upgrade-Bob-pw-7"
TARGETS = ("alice/dev", "alice/prod", "bob/main")
RELEASE_FILES = 24
ORCHESTRATE_TIMEOUT = 1200
PROBE_USER_PREFIX = "probe"
# sentry:upgrade:method of each run, and how the master (and the replicas) go with it.
METHODS = {"auto": ("in_place", "in_place"), "export": ("export_import", "remake")}
# Minions of older Salt releases under the 3008 master (as mixed fleets are), by method: between the two
# runs the master, a replica and the front each run 3006 LTS or 3007 once; the others run 3008.
OLDER_SALT = {
    "auto": {PRIMARY: "3006", REPLICAS[0]: "3007"},
    "export": {PRIMARY: "3007", REPLICAS[1]: "3006", FRONT: "3006"},
}


def no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pillars(hosts, version: str) -> dict[str, dict]:
    """test_cluster's pillars, with bob and two more indexes on the master."""
    result = cluster_pillars({minion_id: host.address for minion_id, host in hosts.items()}, version)
    bootstrap = result[PRIMARY]["sentry"]["bootstrap"]
    bootstrap["users"]["bob"] = {"password": BOB_PASSWORD}
    bootstrap["indexes"].update({"alice/prod": {"bases": ["alice/dev"]}, "bob/main": {"bases": []}})
    return result


class Upgradable:
    """The deployed cluster, the versions, and what a client sees."""

    def __init__(self, cluster: SaltCluster, hosts: dict, old: str, new: str, method: str) -> None:
        self.cluster, self.hosts, self.old, self.new, self.method = cluster, hosts, old, new, method
        self.master_method, self.replica_method = METHODS[method]
        self.front_url = f"http://{hosts[FRONT].address}"
        self.known_file = ""  # path on the server of a file the reader fetches

    def upgrade_pillar(self, version: str) -> dict:
        return {
            "sentry": {
                "upgrade": {
                    "version": version,
                    "master": PRIMARY,
                    "replicas": f"L@{','.join(REPLICAS)}",
                    "front": FRONT,
                    "refresh": False,  # the hosts have no way out; the local repository is known already
                    "method": self.method,
                    "sync_timeout": 180,
                }
            }
        }

    def orchestrate(self, version: str):
        started = time.monotonic()
        ran = self.cluster.orchestrate(
            "sentry.upgrade", pillar=self.upgrade_pillar(version), timeout=ORCHESTRATE_TIMEOUT
        )
        print(f"orchestration to {version}: rc={ran.returncode} in {time.monotonic() - started:.1f}s")
        return ran

    def call(self, minion_id: str, *args: str):
        ran = self.cluster.salt(minion_id, *args)
        assert ran.returncode == 0 and isinstance(ran.data, dict), ran.stdout + ran.stderr
        return ran.data[minion_id]

    def versions(self) -> dict[str, str]:
        return {node: self.call(node, "pkg.version", "sentry") for node in NODES}

    def content(self, node: str) -> dict:
        """Users, indexes and every release file's sha256 (by index and name) a node holds."""
        host = self.hosts[node]
        listed = host.sh(
            f"cd {SERVERDIR}/+files && find . -type f -name '*.whl' -print0 | sort -z | xargs -0 -r sha256sum"
        )
        files = {}
        for line in listed.stdout.splitlines():
            digest, path = line.split(None, 1)
            parts = Path(path).parts  # ., user, index, +f, ab, cdef, name
            files[f"{parts[1]}/{parts[2]}/{parts[-1]}"] = digest
        users = [user for user in self.call(node, "sentry_admin.list_users") if not user.startswith(PROBE_USER_PREFIX)]
        indexes = sorted(self.call(node, "sentry_admin.list_indexes"))
        return {"users": sorted(users), "indexes": indexes, "files": files}

    def wait_replicas_synced(self) -> None:
        """Caught up, and (old servers do not tell) every release file on the replica's disk."""
        for replica in REPLICAS:
            self.call(replica, "sentry_admin.wait_synced", "timeout=180")
            self.hosts[replica].wait_for(
                f"test $(find {SERVERDIR}/+files -name '*.whl' 2>/dev/null | wc -l) -ge {RELEASE_FILES}", timeout=180
            )

    def front_file_sha256(self) -> str:
        with no_proxy_opener().open(self.front_url + self.known_file, timeout=30) as response:
            return hashlib.sha256(response.read()).hexdigest()

    def root_auth(self) -> str:
        """The X-Devpi-Auth header of root, logged in through the front (only root makes users)."""
        request = urllib.request.Request(  # noqa: S310 - the test's own http URL
            f"{self.front_url}/+login",
            data=json.dumps({"user": "root", "password": ROOT_PASSWORD}).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with no_proxy_opener().open(request, timeout=30) as response:
            token = json.loads(response.read())["result"]["password"]
        return base64.b64encode(f"root:{token}".encode()).decode()


@pytest.fixture(scope="module", params=sorted(METHODS))
def upgradable(request, salt_factories, apt_repo, old_sentry_deb, sentry_deb, tmp_path_factory):
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    with SaltCluster(salt_factories, tmp_path_factory.mktemp("upgrade"), state_top=STATE_TOP) as cluster:
        hosts = cluster.add_minions(
            {minion_id: {} for minion_id in (*NODES, FRONT)}, salt_versions=OLDER_SALT[request.param]
        )
        for node in NODES:
            use_apt_repo(hosts[node], apt_repo)
        for minion_id, pillar in pillars(hosts, old).items():
            cluster.set_pillar(minion_id, pillar)
        first = cluster.apply("*")
        assert {minion: failed(states) for minion, states in first.items() if failed(states)} == {}
        deployment = Upgradable(cluster, hosts, old, new, request.param)
        upload_release_files(deployment, tmp_path_factory.mktemp("upgrade-wheels"))
        deployment.wait_replicas_synced()
        yield deployment


def upload_release_files(deployment: Upgradable, folder: Path) -> None:
    """RELEASE_FILES wheels spread over the three indexes, uploaded through the front."""
    client = deployment.hosts[PRIMARY]
    passwords = {"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD}
    for number in range(RELEASE_FILES):
        target = TARGETS[number % len(TARGETS)]
        (folder / target.replace("/", "-")).mkdir(exist_ok=True)
        make_wheel(
            folder / target.replace("/", "-"), f"upgrade-probe-{number % 5}", f"1.{number}", payload=str(number) * 40
        )
    for target in TARGETS:
        user = target.split("/")[0]
        local = folder / target.replace("/", "-")
        inside = client.path(f"/srv/wheels/{local.name}")
        inside.mkdir(parents=True)
        for wheel in local.iterdir():
            (inside / wheel.name).write_bytes(wheel.read_bytes())
        sentry_client(client, "use", f"{deployment.front_url}/{target}")
        sentry_client(client, "login", user, password=passwords[user])
        sentry_client(client, "upload", *sorted(f"/srv/wheels/{local.name}/{wheel.name}" for wheel in local.iterdir()))
    project = json.loads(
        no_proxy_opener()
        .open(
            urllib.request.Request(  # noqa: S310 - the test's own http URL
                f"{deployment.front_url}/alice/dev/upgrade-probe-0", headers={"Accept": "application/json"}
            ),
            timeout=30,
        )
        .read()
    )
    link = next(iter(project["result"].values()))["+links"][0]["href"]
    deployment.known_file = link.removeprefix(deployment.front_url)


class Traffic:
    """A reader fetching the known file and a writer making users (as root) through the front, until stopped."""

    def __init__(self, deployment: Upgradable, expected_sha256: str) -> None:
        self.deployment, self.expected = deployment, expected_sha256
        # Logged in once, before the upgrade: the token stays valid across it (same secret).
        self.auth = deployment.root_auth()
        self.reads = self.failed_reads = 0
        self.read_errors: list[str] = []
        self.writes: list[tuple[float, str, bool]] = []  # (time, user, acknowledged)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _read(self) -> None:
        while not self._stop.is_set():
            self.reads += 1
            try:
                if self.deployment.front_file_sha256() != self.expected:
                    raise ValueError("wrong content")
            except (OSError, ValueError, urllib.error.URLError) as exc:
                self.failed_reads += 1
                self.read_errors.append(f"{time.strftime('%H:%M:%S')} {exc}")
            self._stop.wait(0.1)

    def _write(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            user = f"{PROBE_USER_PREFIX}{number}"
            body = json.dumps({"password": f"Probe-pw-{number}"}).encode()
            request = urllib.request.Request(  # noqa: S310 - the test's own http URL
                f"{self.deployment.front_url}/{user}",
                data=body,
                method="PUT",
                headers={"Content-Type": "application/json", "Accept": "application/json", "X-Devpi-Auth": self.auth},
            )
            try:
                with no_proxy_opener().open(request, timeout=10) as response:
                    acknowledged = response.status == 201
            except (OSError, urllib.error.URLError):
                acknowledged = False
            self.writes.append((time.monotonic(), user, acknowledged))
            self._stop.wait(0.5)

    def write_outage(self) -> float:
        """Seconds from the first refused write to the first acknowledged after the last refusal (``write_window``)."""
        return write_window(self.writes)

    def acknowledged_users(self) -> list[str]:
        return [user for _, user, ok in self.writes if ok]


def orchestration_states(ran) -> dict:
    """state key -> result of the orchestration's own states."""
    data = ran.data.get("data", ran.data) if isinstance(ran.data, dict) else {}
    (states,) = data.values()
    return states


def test_a_corrupt_release_file_fails_the_master_upgrade_and_rolls_everything_back(upgradable):
    master = upgradable.hosts[PRIMARY]
    victim = master.sh(f"find {SERVERDIR}/+files/bob -type f -name '*.whl' | sort | head -1").stdout.strip()
    original = master.path(victim).read_bytes()
    front_site = upgradable.hosts[FRONT].path("/etc/nginx/sites-available/sentry-front.conf").read_text()
    master.path(victim).write_bytes(original + b"corrupted on disk")
    try:
        before = {node: upgradable.content(node) for node in NODES}
        ran = upgradable.orchestrate(upgradable.new)
        assert ran.returncode != 0, ran.stdout
        if upgradable.master_method == "in_place":  # devpi-fsck of the serverdir, before anything changes
            assert "failed at step 'check before'" in ran.stdout, ran.stdout[-6000:]
            assert f"devpi-fsck of {SERVERDIR} failed" in ran.stdout and victim.rsplit("/", 1)[1] in ran.stdout
        else:
            assert "failed at step 'import'" in ran.stdout, ran.stdout[-6000:]
            assert "sha256 mismatch" in ran.stdout
        states = orchestration_states(ran)
        replica_steps = [key for key in states if "sentry-upgrade-replica-" in key]
        assert all(states[key]["result"] is False and not states[key]["changes"] for key in replica_steps), (
            replica_steps
        )
        assert upgradable.versions() == dict.fromkeys(NODES, upgradable.old)
        assert {node: upgradable.content(node) for node in NODES} == before
        assert upgradable.call(PRIMARY, "sentry_admin.status")["up"] is True
        assert upgradable.hosts[FRONT].path("/etc/nginx/sites-available/sentry-front.conf").read_text() == front_site
        exports = master.sh("ls -d /var/lib/sentry/export-* 2>/dev/null || true").stdout.split()
        failed_data = master.sh("ls -d /var/lib/sentry/_data-failed-* 2>/dev/null || true").stdout.split()
        if upgradable.master_method == "in_place":
            # refused while it still served: no export, no snapshot, nothing kept aside
            assert (len(exports), len(failed_data)) == (0, 0), (exports, failed_data)
        else:
            # the failed attempt's export is kept; devpi-import stopped at the bad file and left nothing in
            # the serverdir: no empty _data-failed-* either
            assert (len(exports), len(failed_data)) == (1, 0), (exports, failed_data)
    finally:
        master.path(victim).write_bytes(original)
    upgradable.wait_replicas_synced()


def test_a_failed_health_check_after_the_stop_rolls_the_in_place_master_back(upgradable):
    """In place, past the stop: the new version starts on a serverdir that no longer holds what it held
    (its uuid rewritten during the install, as a damaged .nodeinfo would be). The health check fails and
    everything comes back: old version, data, front; the replicas are not touched."""
    if upgradable.master_method != "in_place":
        pytest.skip("export/import fails past its stop in the test above (the import)")
    master, stranger = upgradable.hosts[PRIMARY], "0" * 32
    uuid = json.loads(master.path(f"{SERVERDIR}/.nodeinfo").read_text())["uuid"]
    front_site = upgradable.hosts[FRONT].path("/etc/nginx/sites-available/sentry-front.conf").read_text()
    before = {node: upgradable.content(node) for node in NODES}
    finished: list = []
    orchestrating = threading.Thread(target=lambda: finished.append(upgradable.orchestrate(upgradable.new)))
    orchestrating.start()
    try:
        wait_for_step(master, f"{SERVERDIR}.operation.json", "install", timeout=ORCHESTRATE_TIMEOUT / 2)
        # The snapshot holds a copy: rewritten in place, the serverdir's alone changes.
        rewrite_uuid(master, f"{SERVERDIR}/.nodeinfo", stranger)
    finally:
        orchestrating.join(timeout=ORCHESTRATE_TIMEOUT)
    (ran,) = finished
    assert ran.returncode != 0, ran.stdout[-6000:]
    assert "failed at step 'health check'" in ran.stdout, ran.stdout[-6000:]
    assert f"uuid is '{stranger}', '{uuid}' at the stop" in ran.stdout, ran.stdout[-6000:]
    states = orchestration_states(ran)
    replica_steps = [key for key in states if "sentry-upgrade-replica-" in key]
    assert all(states[key]["result"] is False and not states[key]["changes"] for key in replica_steps), replica_steps
    assert upgradable.versions() == dict.fromkeys(NODES, upgradable.old)
    assert json.loads(master.path(f"{SERVERDIR}/.nodeinfo").read_text())["uuid"] == uuid
    assert {node: upgradable.content(node) for node in NODES} == before
    assert upgradable.call(PRIMARY, "sentry_admin.status")["up"] is True
    assert upgradable.hosts[FRONT].path("/etc/nginx/sites-available/sentry-front.conf").read_text() == front_site
    assert not master.path("/var/lib/sentry/.sentry-snapshot-prepared").exists()
    failed_data = master.sh("ls -d /var/lib/sentry/_data-failed-*").stdout.split()
    assert len(failed_data) == 1 and stranger in master.path(f"{failed_data[0]}/.nodeinfo").read_text()
    master.run(["rm", "-rf", failed_data[0]])  # kept for the operator; the backup count below expects none
    upgradable.wait_replicas_synced()


def test_upgrade_keeps_every_file_and_reads_never_fail(upgradable):
    before = {node: upgradable.content(node) for node in NODES}
    assert before[PRIMARY]["files"] and len(before[PRIMARY]["files"]) == RELEASE_FILES
    assert all(before[replica] == before[PRIMARY] for replica in REPLICAS), "replicas not in sync before"
    expected = upgradable.front_file_sha256()
    with Traffic(upgradable, expected) as traffic:
        time.sleep(2)
        ran = upgradable.orchestrate(upgradable.new)
        time.sleep(2)
    assert ran.returncode == 0, ran.stdout[-8000:] + ran.stderr[-3000:]
    assert upgradable.versions() == dict.fromkeys(NODES, upgradable.new)
    after = {node: upgradable.content(node) for node in NODES}
    assert after == dict.fromkeys(NODES, before[PRIMARY])
    # Every write the front acknowledged is there after the upgrade, on the master and the replicas.
    for node in NODES:
        users = set(upgradable.call(node, "sentry_admin.list_users"))
        assert set(traffic.acknowledged_users()) <= users, node

    report = upgradable.call(PRIMARY, "sentry_admin.last_upgrade")
    assert report["method"]["method"] == upgradable.master_method, report["method"]
    for replica in REPLICAS:
        assert upgradable.call(replica, "sentry_upgrade.last")["method"]["method"] == upgradable.replica_method
    outage = traffic.write_outage()
    if upgradable.master_method == "in_place":
        against = f"snapshot step {report['steps'].get('snapshot')}s (goal: window <= 10 s)"
    else:
        bare = report["export"]["seconds"] + report["import"]["seconds"]
        against = f"bare export+import {bare:.1f}s; window / bare = {outage / bare:.2f} (goal <= 1.2 + 10 s / bare)"
    print(
        f"method {upgradable.method} ({report['method']['method']}: {report['method']['why']})\n"
        f"reads through the front: {traffic.reads}, failed {traffic.failed_reads} {traffic.read_errors[:5]}\n"
        f"write-unavailable window: {outage:.1f}s (master says {report['write_outage_seconds']}s); {against}\n"
        f"master's steps (s): {report['steps']}"
    )
    assert traffic.reads > 20 and traffic.failed_reads == 0, traffic.read_errors[:10]
    assert report["read_outage_seconds"] == 0.0, report  # the front sent reads to the replicas
    assert report["write_outage_seconds"] > 0
    assert outage > 0, "no write was ever refused: the writer did not see the master go"


def test_running_it_again_at_the_same_version_changes_nothing(upgradable):
    ran = upgradable.orchestrate(upgradable.new)
    assert ran.returncode == 0, ran.stdout[-5000:]
    states = orchestration_states(ran)
    assert [key.split("_|-")[1] for key in states] == ["sentry-upgrade-nothing-to-do"], list(states)
    assert all(not state["changes"] for state in states.values())


def test_prune_backups_keeps_the_newest_of_each_kind(upgradable):
    master = upgradable.hosts[PRIMARY]
    listed = upgradable.call(PRIMARY, "sentry_admin.backups")
    if upgradable.master_method == "in_place":
        # the failed attempt changed nothing; the upgrade kept its snapshot; no exports
        assert [len(listed[kind]) for kind in ("backup", "failed", "export")] == [1, 0, 0], listed
        return
    # the failed attempt left its export (its import wrote nothing to keep); the upgrade its backup and export
    assert [len(listed[kind]) for kind in ("backup", "failed", "export")] == [1, 0, 2], listed

    planned = upgradable.cluster.apply(PRIMARY, "sentry.prune_backups", "test=True")[PRIMARY]
    would_go = sorted(state["name"] for state in planned.values() if state["result"] is None)
    assert would_go == [listed["export"][1]], planned
    assert upgradable.call(PRIMARY, "sentry_admin.backups") == listed  # test=True removed nothing

    pruned = upgradable.cluster.apply(PRIMARY, "sentry.prune_backups")[PRIMARY]
    assert sorted(state["name"] for state in pruned.values() if state["changes"]) == would_go
    left = upgradable.call(PRIMARY, "sentry_admin.backups")
    assert left == {**listed, "export": listed["export"][:1]}
    assert master.sh(f"test -d {listed['export'][0]}").returncode == 0
    again = upgradable.cluster.apply(PRIMARY, "sentry.prune_backups")[PRIMARY]
    assert not any(state["changes"] for state in again.values())
