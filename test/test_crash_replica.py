"""Crash safety of a replica upgrade (issue 12): kill -9 of salt-call and all its children at each step of
``sentry_upgrade.replica``, then apply; recover, or run the upgrade again (support/crash.py: how).

The replica cases have a master and a replica host of their own, deployed at
the older version; the master is then upgraded (a new uuid: the replica's data
is stale, as in sentry.upgrade) and ``sentry_upgrade.replica`` is killed at
each step. The apply refuses, naming the backup and sentry_data.recover, and
initialises nothing; the upgrade run again ends with a replica that holds
what the master holds and follows it, the old data kept aside.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest
from support.aptrepo import use_apt_repo
from support.client import sentry_client
from support.crash import (
    HOME,
    NGINX_URL,
    OWNER,
    OWNER_PASSWORD,
    PROGRAM,
    ROOT_PASSWORD,
    SERVER_URL,
    SERVERDIR,
    TRAIL,
    Crashable,
    Operation,
    assert_refused,
    deb_version,
    killing_point,
)
from support.host_roots import new_host
from support.hosts import host_address
from support.masterless import MasterlessSalt
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

REPLICATED_NUMBERS = (45, 46)  # host_address() of the master and the replica
REPLICA_SECRET = "crash-replica-secret-0123456789abcdef"
BASE_REPLICA = f"{HOME}/base-replica"  # the replica's old data, for each case to start from
REPLICA_WHEELS = 8
# Every step of sentry_upgrade.replica that writes the trail and lasts long enough to be caught
# ('move data aside' is a rename between two writes of it), by the way the replica goes: in place
# when it follows its master as it is (the master upgraded in place kept its uuid), remade otherwise.
REPLICA_STEPS = {
    "in place": ("stop", "snapshot", "install", "start server", "catch up"),
    "remade": ("stop", "install", "initialise", "start server", "catch up"),
}
# (way the replica goes, step, how it is mended): the upgrade run again at each step; sentry_data.recover
# where the most is undone. In place first: the master is upgraded in place for those, then put back and
# upgraded by export for the others.
REPLICA_CASES = [
    (kind, step, way)
    for kind in ("in place", "remade")
    for step, way in (*((step, "rerun") for step in REPLICA_STEPS[kind]), ("catch up", "recover"))
]
LATE_PAYLOAD = 400_000  # random bytes (hex) in a late wheel: about 100 s through the slowed nginx


def master_pillar(version: str, replica_address: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {
                "root_password": ROOT_PASSWORD,
                "role": "primary",
                "secret": REPLICA_SECRET,
                "no_root_pypi": True,
                "offline_mode": True,
            },
            "nginx": {"replica_addresses": [replica_address]},
            "bootstrap": {"users": {OWNER: {"password": OWNER_PASSWORD}}, "indexes": {"carol/dev": {"bases": []}}},
        }
    }


def replica_pillar(version: str, master_address: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {"master_url": f"http://{master_address}", "secret": REPLICA_SECRET},
        }
    }


class Replicated:
    """A master and its replica, both deployed at the older version; the master is upgraded the way a
    case needs it (in place or by export), the replica put back at the older version on its old data."""

    def __init__(self, master: Crashable, replica: Crashable, master_address: str, folder: Path) -> None:
        self.master, self.replica, self.master_address, self.folder = master, replica, master_address, folder
        self.old_on_disk: dict[str, str] = {}  # the replica's release files before the master's upgrade
        self.uploads = 0
        self.master_method = ""  # how the master was upgraded: "auto" (in place) or "export"
        self.master_backup = ""  # the data it had at the older version, kept by its upgrade

    def upload(self, payload: str = "") -> str:
        """One more release file on the master, through its nginx; its file name."""
        self.uploads += 1
        local = self.folder / f"late-{self.uploads}"
        local.mkdir()
        wheel = make_wheel(local, "crash-late", f"2.{self.uploads}", payload=payload or f"late {self.uploads}")
        host = self.master.host
        host.path("/srv/late").mkdir(parents=True, exist_ok=True)
        host.path(f"/srv/late/{wheel.name}").write_bytes(wheel.read_bytes())
        sentry_client(host, "use", f"{NGINX_URL}/carol/dev")
        sentry_client(host, "login", OWNER, password=OWNER_PASSWORD)  # anew: the master was upgraded since
        sentry_client(host, "upload", f"/srv/late/{wheel.name}")
        return wheel.name

    def replica_serves(self, name: str, timeout: float = 60) -> None:
        """The replica's nginx lists ``name`` on carol/dev within ``timeout`` seconds."""
        self.replica.host.wait_for(
            f"curl -fsS --max-time 5 {NGINX_URL}/carol/dev/+simple/crash-late/ | grep -q {shlex.quote(name)}",
            timeout=timeout,
        )

    def status(self) -> dict | None:
        """The replica's /+status, or None when nothing answers."""
        ran = self.replica.host.run(
            ["curl", "-fsS", "--max-time", "5", "-H", "Accept: application/json", f"{SERVER_URL}/+status"],
            check=False,
        )
        return json.loads(ran.stdout)["result"] if ran.returncode == 0 else None

    def set_replica_pillar(self, version: str) -> None:
        self.replica.salt.set_pillar(replica_pillar(version, self.master_address))

    def kept_aside(self, old: dict[str, str]) -> list[str]:
        """The backups and failed attempts beside the replica's serverdir that hold its ``old`` release files."""
        listed = self.replica.call("sentry_data.backups")
        return [
            path
            for path in listed["backup"] + listed["failed"]
            if self.replica.host.path(f"{path}/+files").is_dir() and self.replica.disk(path) == old
        ]

    def master_upgraded(self, method: str) -> None:
        """The master at the newer version, upgraded with ``method``: in place ("auto") it keeps its uuid and
        the replica's old data follows it; by export it gets a new one that only a remade replica follows.
        Upgraded the other way before, it is first put back: the older version on the data it had."""
        if self.master_method == method:
            return
        master, host = self.master, self.master.host
        if self.master_backup:
            host.run(["supervisorctl", "stop", PROGRAM])
            host.sh(f"rm -rf {SERVERDIR} && mv {self.master_backup} {SERVERDIR} && rm -rf {HOME}/_data-*")
            host.run(
                ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={master.old}"],
                env={"DEBIAN_FRONTEND": "noninteractive"},
            )
            master.salt.set_pillar(master_pillar(master.old, self.replica.host.address))
            applied = master.salt.apply("sentry")
            assert applied.succeeded, applied.failed or applied.errors
        upgraded = master.call("sentry_upgrade.master", master.new, "refresh=False", f"method={method}")
        assert upgraded["changed"] is True, upgraded
        assert upgraded["method"]["method"] == ("in_place" if method == "auto" else "export_import"), upgraded
        master.salt.set_pillar(master_pillar(master.new, self.replica.host.address))
        self.master_method, self.master_backup = method, upgraded["backup"]

    def reset(self) -> dict[str, str]:
        """The replica back at the older version on its old data, following its master as far as it can;
        the release files it holds then."""
        host, replica = self.replica.host, self.replica
        if host.path(TRAIL).exists():
            replica.salt.call("sentry_data.recover", check=False)
        host.run(["supervisorctl", "stop", PROGRAM], check=False)
        host.sh(f"rm -rf {SERVERDIR} {HOME}/_data-* {HOME}/._data-* && cp -a {BASE_REPLICA} {SERVERDIR}")
        assert replica.disk(SERVERDIR) == self.old_on_disk
        if replica.version() != replica.old:
            host.run(
                ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={replica.old}"],
                env={"DEBIAN_FRONTEND": "noninteractive"},
            )
        applied = replica.apply()
        assert applied.succeeded, applied.failed or applied.errors
        assert replica.version() == replica.old
        if self.master_method == "auto":  # same uuid: it catches up with what earlier cases uploaded
            replica.call("sentry_upgrade.wait_synced", "timeout=120")
        return replica.disk(SERVERDIR)


@pytest.fixture(scope="module")
def replicated(apt_repo, old_sentry_deb, sentry_deb, tmp_path_factory):
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    master_address, replica_address = (host_address(number) for number in REPLICATED_NUMBERS)
    started = time.monotonic()
    with (
        new_host("crash-m", address=master_address) as master_host,
        new_host("crash-r", address=replica_address) as replica_host,
    ):
        for host in (master_host, replica_host):
            use_apt_repo(host, apt_repo)
        master_salt = MasterlessSalt(master_host, master_pillar(old, replica_address))
        applied = master_salt.apply("sentry")
        assert applied.succeeded, applied.failed or applied.errors
        folder = tmp_path_factory.mktemp("crash-replica-wheels")
        master_host.path("/srv/wheels").mkdir(parents=True)
        for number in range(REPLICA_WHEELS):
            wheel = make_wheel(folder, f"crash-rep-{number % 3}", f"1.{number}", payload=str(number) * 40)
            master_host.path(f"/srv/wheels/{wheel.name}").write_bytes(wheel.read_bytes())
        sentry_client(master_host, "use", f"{NGINX_URL}/carol/dev")
        sentry_client(master_host, "login", OWNER, password=OWNER_PASSWORD)
        master_host.sh("DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /srv/wheels/*.whl")
        replica_salt = MasterlessSalt(replica_host, replica_pillar(old, master_address))
        applied = replica_salt.apply("sentry")
        assert applied.succeeded, applied.failed or applied.errors
        master = Crashable(master_salt, old, new, {})
        replica = Crashable(replica_salt, old, new, {})
        deployment = Replicated(master, replica, master_address, folder)
        replica_salt.call("sentry_upgrade.wait_synced", "timeout=120")
        deployment.old_on_disk = replica.disk(SERVERDIR)
        assert len(deployment.old_on_disk) == REPLICA_WHEELS, deployment.old_on_disk
        replica_host.run(["supervisorctl", "stop", PROGRAM])
        replica_host.sh(f"cp -a {SERVERDIR} {BASE_REPLICA}")
        replica_host.run(["supervisorctl", "start", PROGRAM])
        print(f"\nreplicated hosts deployed at {old} in {time.monotonic() - started:.1f}s")
        yield deployment


SLOW_REPLICATION = "/etc/nginx/conf.d/zz-test-slow-replication.conf"


def slow_replication(master_host, slow: bool) -> None:
    """Every answer of the master's nginx at 4 kB/s (or as fast as it can again), reloaded. A reload leaves
    an answer under way at 4 kB/s until it ends."""
    if slow:
        master_host.path(SLOW_REPLICATION).write_text("limit_rate 4k;\n")
    elif master_host.path(SLOW_REPLICATION).exists():
        master_host.path(SLOW_REPLICATION).unlink()
    else:
        return
    master_host.run(["service", "nginx", "reload"])


@pytest.mark.parametrize(
    ("kind", "step", "way"),
    REPLICA_CASES,
    ids=[f"{kind.replace(' ', '-')}-{step.replace(' ', '-')}-{way}" for kind, step, way in REPLICA_CASES],
)
def test_a_killed_replica_upgrade_is_refused_then_mended_with_the_old_data_kept(replicated, kind, step, way):
    deployment = replicated
    deployment.master_upgraded("auto" if kind == "in place" else "export")
    started = time.monotonic()
    before = deployment.reset()  # the replica's release files when its upgrade begins
    replica, host, master_host = deployment.replica, deployment.replica.host, deployment.master.host
    upgrade = ("sentry_upgrade.replica", replica.new, "refresh=False", "sync_timeout=180")
    if step == "snapshot":  # a copied file that takes a while keeps the snapshot going long enough
        host.sh(f"head -c 200M /dev/zero > {SERVERDIR}/.padding && chown sentry:sentry {SERVERDIR}/.padding")
    # The server stops in a blink too: frozen, it waits out supervisor's SIGTERM until it thaws.
    frozen = host.sh(f"supervisorctl pid {PROGRAM}").stdout.strip() if step == "stop" else ""
    try:
        if step == "catch up":
            # A replica catches up in a blink: the master's nginx sends slowly (until the apply has been
            # refused), so that the kill finds it catching up: a remade one with all of the master's files,
            # one in place with a large late upload.
            slow_replication(master_host, True)
            if kind == "in place":
                deployment.upload(payload=os.urandom(LATE_PAYLOAD).hex())
        if frozen:
            host.run(["kill", "-STOP", frozen])
        operation = Operation(replica, *upgrade)
        operation.wait_until(f"step {step!r}", killing_point(replica, step))
        if step == "install":
            time.sleep(0.3)  # well into dpkg's unpacking
        killed = operation.kill()
        if frozen:
            host.run(["kill", "-CONT", frozen], check=False)
        trail = operation.trail()
        assert trail["operation"] == "replica upgrade" and trail["step"] == step, (trail, killed)
        assert_killed_replica_upgrade_refused(deployment, kind, step, trail, killed, before)
    finally:
        slow_replication(master_host, False)
        if frozen:
            host.run(["kill", "-CONT", frozen], check=False)
        host.sh(f"rm -f {SERVERDIR}/.padding")

    if way == "recover":
        assert_replica_rolled_back(deployment, step, before, kind)
    else:
        assert_replica_upgrade_rerun(deployment, kind, upgrade, before)
    print(f"case took {time.monotonic() - started:.1f}s")


def assert_killed_replica_upgrade_refused(
    deployment: Replicated, kind: str, step: str, trail: dict, killed: list[str], before: dict[str, str]
) -> None:
    """What the kill left: the old release files whole (in the serverdir or the backup it was moved to);
    an apply that refuses, naming the backup and what to run, and touches nothing; no master serving."""
    replica, host = deployment.replica, deployment.replica.host
    if step == "install":
        assert any("dpkg" in command for command in killed), killed
    if trail.get("backup") and host.path(trail["backup"]).is_dir():
        assert replica.disk(trail["backup"]) == before
    if kind == "in place":
        assert trail.get("snapshot") or step == "stop", trail
        if step in ("stop", "snapshot", "install"):  # never moved: whole, the new server not started yet
            assert replica.disk(SERVERDIR) == before
    elif not trail.get("backup"):  # not moved aside yet
        assert replica.disk(SERVERDIR) == before
    left = serverdir_listing(host)

    assert_refused(replica, trail)  # ... which changed nothing (its states say so)
    status = deployment.status()
    if status is None:  # nothing runs on the serverdir: it is as the kill left it
        assert serverdir_listing(host) == left, "the apply touched the serverdir"
    else:  # the old replica whose stop was cut short, or the new one the upgrade started: it writes as it replicates
        assert status["role"].upper() == "REPLICA", f"a master serves over the trail: {status}"
    if step in ("snapshot", "install", "initialise"):
        assert status is None, f"something serves over the trail: {status}"


def serverdir_listing(host) -> list[str]:
    """Every path below the serverdir but devpi-web's search index, which a server the killed upgrade
    started keeps up to date (it merges its segments as it pleases)."""
    return sorted(str(path) for path in host.path(SERVERDIR).rglob("*") if ".indices" not in path.parts)


def assert_replica_upgrade_rerun(deployment: Replicated, kind: str, upgrade: tuple, before: dict[str, str]) -> None:
    """The upgrade run again puts back what the killed one left, then upgrades the replica the same way."""
    replica, host = deployment.replica, deployment.replica.host
    result = replica.call(*upgrade)
    print(f"rerun: recovered first {result.get('recovered_first')}; steps {result['steps']}")
    assert result["changed"] is True and result["recovered_first"]["recovered"] is True, result
    assert result["method"]["method"] == ("in_place" if kind == "in place" else "remake"), result["method"]
    assert result["version"] == {"old": replica.old, "new": replica.new}, result
    assert replica.version() == replica.new and not host.path(TRAIL).exists()
    audit = host.run(["dpkg", "--audit"], check=False)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout + audit.stderr
    status = deployment.status()
    assert status["role"].upper() == "REPLICA", status
    # It holds what the master holds, served through its nginx, and follows it.
    assert replica.snapshot() == deployment.master.snapshot()
    late = deployment.upload()
    deployment.replica_serves(late)
    # The old data was not deleted: aside, beside the serverdir.
    assert deployment.kept_aside(before), replica.call("sentry_data.backups")
    deployment.set_replica_pillar(replica.new)
    applied = replica.apply()
    deployment.set_replica_pillar(replica.old)
    assert applied.succeeded and applied.changed == {}, applied.changed or applied.failed or applied.errors


def assert_replica_rolled_back(deployment: Replicated, step: str, before: dict[str, str], kind: str) -> None:
    """sentry_data.recover puts the replica back as it was: the older version on its old data, a replica
    (following the master as before the kill: in place it catches up again; remade it stays stale, the
    master's new uuid followed only by a remade one); what the killed upgrade had made is kept as a
    failed attempt."""
    replica, host = deployment.replica, deployment.replica.host
    recovered = replica.call("sentry_data.recover")
    print(f"recover: {recovered}")
    assert recovered["rolled_back"] is True and recovered["step"] == step, recovered
    assert replica.version() == replica.old and not host.path(TRAIL).exists()
    audit = host.run(["dpkg", "--audit"], check=False)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout + audit.stderr
    on_disk = replica.disk(SERVERDIR)
    if kind == "in place":  # it follows its master again, and may have fetched the late upload already
        assert before.items() <= on_disk.items(), (before, on_disk)
    else:
        assert on_disk == before
    status = deployment.status()
    assert status and status["role"].upper() == "REPLICA", status
    listed = replica.call("sentry_data.backups")
    assert listed["backup"] == [] and len(listed["failed"]) == 1, listed
    applied = replica.apply()
    assert applied.succeeded, applied.failed or applied.errors
    if kind == "in place":
        replica.call("sentry_upgrade.wait_synced", "timeout=120")
        assert replica.snapshot() == deployment.master.snapshot()
