"""``sentry_upgrade.master`` in place: the older deb to the newest, one devpi database version ("4").

A test host deployed at the older version (from a local apt repository) holds
users, indexes and uploaded release files. Then, while a writer makes users
as root through nginx every 0.3 s:

- the upgrade chooses in place by itself and says why; the serverdir stays
  (same uuid), the snapshot beside it shares the release files' inodes; every
  file hash, user, index and project is as before, every acknowledged write
  is there; the write window is printed beside the master's own figure;
- the same upgrade forced to export and import (``method=export``) says so,
  goes through export and import (a new uuid) and keeps everything too;
- an in-place upgrade whose health check fails (the serverdir's node
  identity changed while the new version installs, as a version that
  misread the serverdir would show) rolls back: old version, old data, the
  server answering with its old uuid, no trail.

test_crash kills the in-place steps; test_upgrade runs them orchestrated.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from support.aptrepo import use_apt_repo
from support.client import sentry_client, write_window
from support.debs import deb_version
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.server import rewrite_uuid, wait_for_step
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

ROOT_PASSWORD = "Inplace-Root-pw-7"
ALICE_PASSWORD = "Inplace-Alice-pw-8"
HOME = "/var/lib/sentry"
SERVERDIR = f"{HOME}/data"
PREPARED = f"{HOME}/.sentry-snapshot-prepared"  # sentry_snapshot.prepare's, in server:backup_dir
TRAIL = f"{SERVERDIR}.operation.json"
INDEXES = {"alice/dev": 8, "alice/prod": 4}  # index: release files uploaded
BOOTSTRAP = {
    "users": {"alice": {"password": ALICE_PASSWORD, "email": "alice@example.org"}},
    "indexes": {"alice/dev": {"bases": [], "acl_upload": ["alice"]}, "alice/prod": {"bases": ["alice/dev"]}},
}


def pillar(version: str) -> dict:
    return {
        "sentry": {
            "package": {"source": "repo", "version": version},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": BOOTSTRAP,
        }
    }


class Deployment:
    """One host at the old version with uploads; what it holds, read the same way before and after."""

    def __init__(self, salt: MasterlessSalt, old: str, new: str) -> None:
        self.salt, self.host, self.old, self.new = salt, salt.host, old, new

    def call(self, *args: str):
        return json.loads(self.salt.call(*args).stdout)["local"]

    def upgrade(self, *args: str):
        return self.salt.call("sentry_upgrade.master", self.new, "refresh=False", *args, check=False)

    def files_on_disk(self) -> dict[str, str]:
        listed = self.host.sh(f"cd {SERVERDIR}/+files && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")
        return {path: digest for digest, path in (line.split(None, 1) for line in listed.stdout.splitlines())}

    def content(self) -> dict:
        """Every release file's hash on disk, and users, indexes, projects, versions and files with their
        hashes as the server lists them (the probe users the writer made left out)."""
        state = self.call("sentry_health.server_state")
        state["users"] = {name: user for name, user in state["users"].items() if not name.startswith("probe")}
        return {"on_disk": self.files_on_disk(), "listed": state}

    def uuid(self) -> str:
        return self.call("sentry_server.status")["uuid"]


def upload(deployment: Deployment, folder: Path) -> None:
    host = deployment.host
    for index, count in INDEXES.items():
        local = folder / index.replace("/", "-")
        local.mkdir(parents=True)
        for number in range(count):
            make_wheel(local, f"inplace-probe-{number % 3}", f"1.{number}", payload=f"{index}-{number}" * 30)
        shutil.copytree(local, host.path(f"/tmp/wheels/{local.name}"))
        sentry_client(host, "use", f"http://127.0.0.1:3141/{index}")
        sentry_client(host, "login", "alice", password=ALICE_PASSWORD)
        host.sh(f"DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /tmp/wheels/{local.name}/*.whl")


@pytest.fixture
def deployment(apt_repo, old_sentry_deb, sentry_deb, tmp_path, request):
    name = "inpl-" + request.node.name.removeprefix("test_")[:10].strip("_")
    with new_host(name.replace("_", "-")) as host:
        use_apt_repo(host, apt_repo)
        salt = MasterlessSalt(host, pillar(deb_version(old_sentry_deb)))
        run = salt.apply("sentry")
        assert run.succeeded, run.failed or run.errors
        made = Deployment(salt, deb_version(old_sentry_deb), deb_version(sentry_deb))
        upload(made, tmp_path)
        yield made


class Writer:
    """Makes a user as root through nginx every 0.3 s until stopped; which were acknowledged, and when."""

    def __init__(self, deployment: Deployment) -> None:
        self.host = deployment.host
        login = self.host.run(
            ["curl", "-fsS", "-H", "Content-Type: application/json", "-H", "Accept: application/json",
             "-d", json.dumps({"user": "root", "password": ROOT_PASSWORD}), "http://127.0.0.1/+login"]
        )  # fmt: skip
        token = json.loads(login.stdout)["result"]["password"]
        self.auth = base64.b64encode(f"root:{token}".encode()).decode()
        self.writes: list[tuple[float, str, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _write(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            user = f"probe{number}"
            ran = self.host.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "PUT",
                 "-H", "Content-Type: application/json", "-H", "Accept: application/json",
                 "-H", f"X-Devpi-Auth: {self.auth}", "-d", json.dumps({"password": f"Probe-pw-{number}"}),
                 f"http://127.0.0.1/{user}"],
                check=False,
            )  # fmt: skip
            self.writes.append((time.monotonic(), user, ran.stdout.strip() == "201"))
            self._stop.wait(0.3)

    def acknowledged(self) -> set[str]:
        return {user for _, user, ok in self.writes if ok}

    def outage(self) -> float:
        """Seconds from the first refused write to the first acknowledged after the last refusal (``write_window``)."""
        return write_window(self.writes)


def upgrade_with_writes(deployment: Deployment, *args: str) -> tuple[dict, Writer]:
    with Writer(deployment) as writer:
        time.sleep(1.5)
        ran = deployment.upgrade(*args)
        time.sleep(1.5)
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-3000:]
    return json.loads(ran.stdout)["local"], writer


def test_same_database_version_upgrades_in_place_and_keeps_everything(deployment):
    before, uuid = deployment.content(), deployment.uuid()
    assert len(before["on_disk"]) == sum(INDEXES.values())
    result, writer = upgrade_with_writes(deployment)

    assert result["method"] == {
        "method": "in_place",
        "why": "database version 4 on disk and in the new package",
        "serverdir_database_version": "4",
        "target_database_version": "4",
        "read_from": result["method"]["read_from"],
    }
    assert result["method"]["read_from"].endswith(f"sentry_{deployment.new}_amd64.deb")  # the downloaded deb
    assert [step for step in result["steps"] if step in ("snapshot", "export", "import")] == ["snapshot"]
    # devpi-fsck while it still served; in the window only what does not grow with the data
    steps = list(result["steps"])
    assert steps.index("check before") < steps.index("stop") < steps.index("health check"), steps
    # the snapshot's links made while it served too; at the stop only brought up to date (taken over)
    assert steps.index("link release files") < steps.index("stop") < steps.index("snapshot"), steps
    assert not deployment.host.path(PREPARED).exists()
    assert result["health"]["fsck_before"]["files"] >= len(before["on_disk"]), result["health"]
    assert result["health"]["users"] >= 2 and isinstance(result["health"]["serial"], int), result["health"]
    assert deployment.call("sentry_upgrade.last")["method"]["method"] == "in_place"
    assert deployment.call("pkg.version", "sentry") == deployment.new
    assert deployment.uuid() == uuid  # the same serverdir, not an import
    assert deployment.content() == before
    users = set(deployment.call("sentry_admin.list_users"))
    assert writer.acknowledged() <= users, writer.acknowledged() - users
    snapshot = result["snapshot"]["path"]
    assert snapshot.startswith(f"{HOME}/_data-backup-") and result["snapshot"]["linked"] == len(before["on_disk"])
    some_file = next(iter(before["on_disk"])).removeprefix("./")
    linked = deployment.host.sh(f"stat -c %i {SERVERDIR}/+files/{some_file} {snapshot}/+files/{some_file}").stdout
    assert len(set(linked.split())) == 1, linked  # release files hard-linked, not copied
    print(
        f"\nin place: writes refused for {writer.outage():.1f}s as the writer saw it "
        f"(master says {result['write_outage_seconds']}s); steps (s): {result['steps']}"
    )
    assert result["write_outage_seconds"] > 0 and writer.outage() > 0


def test_method_export_forces_export_and_import(deployment):
    before, uuid = deployment.content(), deployment.uuid()
    result, writer = upgrade_with_writes(deployment, "method=export")

    assert (result["method"]["method"], result["method"]["why"]) == (
        "export_import",
        "sentry:upgrade:method is export",
    )
    assert {"export", "import"} <= set(result["steps"]) and "snapshot" not in result["steps"]
    assert deployment.call("sentry_upgrade.last")["method"]["method"] == "export_import"
    assert deployment.call("pkg.version", "sentry") == deployment.new
    assert deployment.uuid() != uuid  # a fresh import
    after = deployment.content()
    assert after["on_disk"] == before["on_disk"]
    assert {key: after["listed"][key] for key in ("users", "projects", "files")} == {
        key: before["listed"][key] for key in ("users", "projects", "files")
    }
    for index, settings in before["listed"]["indexes"].items():  # the import may add the new version's defaults
        assert after["listed"]["indexes"][index] | settings == after["listed"]["indexes"][index], index
    assert writer.acknowledged() <= set(deployment.call("sentry_admin.list_users"))
    print(
        f"\nexport/import: writes refused for {writer.outage():.1f}s as the writer saw it "
        f"(master says {result['write_outage_seconds']}s); steps (s): {result['steps']}"
    )


def test_a_failed_health_check_in_place_rolls_back_to_the_old_version_and_data(deployment):
    host, before, uuid = deployment.host, deployment.content(), deployment.uuid()
    stranger = "0" * 32
    finished: list = []
    upgrading = threading.Thread(target=lambda: finished.append(deployment.upgrade()))
    upgrading.start()
    try:
        wait_for_step(host, TRAIL, "install")
        # A copy in the snapshot: rewritten in place, the serverdir's alone changes.
        rewrite_uuid(host, f"{SERVERDIR}/.nodeinfo", stranger)
    finally:
        upgrading.join(timeout=900)
    (ran,) = finished
    said = ran.stdout + ran.stderr
    assert ran.returncode != 0, said
    assert f"upgrade to {deployment.new} failed at step 'health check'" in said, said[-3000:]
    assert f"uuid is '{stranger}', '{uuid}' at the stop" in said, said[-3000:]
    assert "Rolled back:" in said and f"sentry {deployment.old} reinstalled" in said
    assert deployment.call("pkg.version", "sentry") == deployment.old
    assert deployment.call("sentry_server.status")["up"] is True
    assert deployment.uuid() == uuid
    assert deployment.content() == before  # the removed file is back, with its hash
    last = deployment.call("sentry_upgrade.last")
    assert last["failed_step"] == "health check", last
    assert not host.path(TRAIL).exists()
    failed = host.sh(f"ls -d {HOME}/_data-failed-*").stdout.split()
    assert len(failed) == 1 and stranger in host.path(f"{failed[0]}/.nodeinfo").read_text()
    assert not host.path(PREPARED).exists()  # the links prepared for the snapshot went with it
