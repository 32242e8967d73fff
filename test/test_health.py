"""``sentry_health.check`` (the upgrade's health check) against real imports, and a real upgrade it rolls back.

A deployed host holds users, indexes with settings other than devpi's
defaults and WHEELS uploaded release files; it is exported once. Each test
copies that export, damages the copy one way (a release file's bytes, a
release file, a user, an index setting) or damages the imported serverdir
(for devpi-fsck), imports the copy into a scratch serverdir, starts a server
on it as the service user, and runs the health check of that server against
the clean export: it must name exactly what differs. The clean copy passes.

Then a real ``sentry_upgrade.master`` from the older deb to the newest
(through a local apt repository) has its export damaged while it installs
the new version: the upgrade must fail at its health check naming the
damage, and roll back (old version, old data, server answering).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from support.aptrepo import use_apt_repo
from support.client import sentry_client
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.server import HostServer, wait_for_step
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

ROOT_PASSWORD = "Health-Root-pw-3"
PASSWORDS = {"alice": "Health-Alice-pw-4", "bob": "Health-Bob-pw-5", "carol": "Health-Carol-pw-6"}
BOOTSTRAP = {
    "users": {
        "alice": {"password": PASSWORDS["alice"], "email": "alice@example.org"},
        "bob": {"password": PASSWORDS["bob"]},
        "carol": {"password": PASSWORDS["carol"], "email": "carol@example.org"},  # no index of her own
    },
    "indexes": {
        "alice/dev": {"bases": [], "acl_upload": ["alice", "bob"]},
        "alice/prod": {"bases": ["alice/dev"], "volatile": False, "acl_upload": ["alice"]},
        "bob/tmp": {"bases": [], "volatile": True},
    },
}
# index: (uploader, number of wheels); project names mix case, '-' and '_' as people upload them
UPLOADS = {"alice/dev": ("alice", 10), "alice/prod": ("alice", 5), "bob/tmp": ("bob", 5)}
WHEELS = sum(count for _, count in UPLOADS.values())
HOME = "/var/lib/sentry"
EXPORT = f"{HOME}/export-clean"
SCRATCH_PORT = 3150


def pillar(package: dict) -> dict:
    return {
        "sentry": {
            "package": package,
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "bootstrap": BOOTSTRAP,
        }
    }


def call(salt: MasterlessSalt, *args: str):
    return json.loads(salt.call(*args).stdout)["local"]


def project_name(number: int) -> str:
    """The project of the ``number``th wheel of an index, spelt as people do (one project, several spellings)."""
    return ("Health_Probe", "health-probe", "Other.Probe")[number % 3] + f"-{number % 4}"


def projects_uploaded() -> int:
    return sum(
        len({re.sub(r"[-_.]+", "-", project_name(number)).lower() for number in range(count)})
        for _, count in UPLOADS.values()
    )


def upload_wheels(salt: MasterlessSalt, folder: Path) -> None:
    """UPLOADS' wheels, each index's by its uploader, through the server's own URL."""
    host = salt.host
    for index, (user, count) in UPLOADS.items():
        local = folder / index.replace("/", "-")
        local.mkdir(parents=True)
        for number in range(count):
            make_wheel(local, project_name(number), f"1.{number}", payload=f"{index}-{number}" * 30)
        shutil.copytree(local, host.path(f"/tmp/wheels/{local.name}"))
        sentry_client(host, "use", f"http://127.0.0.1:3141/{index}")
        sentry_client(host, "login", user, password=PASSWORDS[user])
        host.sh(f"DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /tmp/wheels/{local.name}/*.whl")


@pytest.fixture(scope="module")
def deployed(sentry_deb, tmp_path_factory):
    with new_host("health") as host:
        salt = MasterlessSalt(host, pillar({"source": "deb", "deb": str(sentry_deb)}))
        run = salt.apply("sentry")
        assert run.succeeded, run.failed or run.errors
        upload_wheels(salt, tmp_path_factory.mktemp("health-wheels"))
        exported = call(salt, "sentry_data.export", f"dest={EXPORT}")
        assert exported["files"] == WHEELS
        yield salt


# --- damage, as a faulty disk, tool or hand would do it ------------------------------


def read_index(export: Path) -> dict:
    return json.loads((export / "dataindex.json").read_text())


def write_index(export: Path, data: dict) -> None:
    partial = export / "dataindex.json.partial"
    partial.write_text(json.dumps(data, indent=2))
    partial.replace(export / "dataindex.json")


def release_file(data: dict, index: str, number: int = 0) -> dict:
    return [entry for entry in data["indexes"][index]["files"] if entry["type"] == "releasefile"][number]


def change_bytes(export: Path, index: str = "alice/dev") -> tuple[str, str, str]:
    """Append to one release file and record its new hash, so that the import takes it.

    Returns its name, the hash it was exported with and its new one.
    """
    data = read_index(export)
    entry = release_file(data, index)
    path = export / entry["relpath"]
    path.write_bytes(path.read_bytes() + b"damaged")
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    mapping = entry["entrymapping"]
    old = mapping.get("hashes", {}).get("sha256") or mapping["hash_spec"].split("=", 1)[1]
    mapping["hash_spec"] = f"sha256={new}"
    if "hashes" in mapping:
        mapping["hashes"] = {"sha256": new}
    write_index(export, data)
    return Path(entry["relpath"]).name, old, new


def drop_file(export: Path, index: str = "alice/prod") -> str:
    data = read_index(export)
    entry = release_file(data, index)
    data["indexes"][index]["files"].remove(entry)
    (export / entry["relpath"]).unlink()
    write_index(export, data)
    return Path(entry["relpath"]).name


def drop_user(export: Path, user: str = "carol") -> None:
    data = read_index(export)
    del data["users"][user]
    write_index(export, data)


def set_index(export: Path, index: str, **settings) -> None:
    data = read_index(export)
    data["indexes"][index]["indexconfig"].update(settings)
    write_index(export, data)


# --- one scratch import, its server and its check ----------------------------------------


class Scratch:
    """A damaged copy of the clean export, imported into a scratch serverdir and served on SCRATCH_PORT."""

    def __init__(self, salt: MasterlessSalt, name: str) -> None:
        self.salt, self.host = salt, salt.host
        self.export, self.serverdir = f"{HOME}/export-{name}", f"{HOME}/scratch-{name}"
        self.host.run(["cp", "-a", EXPORT, self.export])
        self.server: HostServer | None = None

    @property
    def export_path(self) -> Path:
        return self.host.path(self.export)

    def import_and_serve(self) -> Scratch:
        call(self.salt, "sentry_data.import", self.export, f"serverdir={self.serverdir}")
        self.server = HostServer(self.host, self.serverdir, SCRATCH_PORT, user="sentry").start()
        return self

    def check(self) -> subprocess.CompletedProcess:
        return self.salt.call(
            "sentry_health.check",
            EXPORT,
            f"url=http://127.0.0.1:{SCRATCH_PORT}",
            f"serverdir={self.serverdir}",
            check=False,
        )

    def failure(self) -> str:
        checked = self.check()
        assert checked.returncode != 0, checked.stdout
        return checked.stdout + checked.stderr

    def remove(self) -> None:
        if self.server:
            self.server.stop()
        self.host.run(["rm", "-rf", self.export, self.serverdir])


@pytest.fixture
def scratch(deployed, request):
    made = Scratch(deployed, request.node.name.removeprefix("test_")[:20])
    yield made
    made.remove()


def test_a_clean_import_passes_and_says_what_it_checked(scratch):
    ran = scratch.import_and_serve().check()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    checked = json.loads(ran.stdout)["local"]
    assert {key: checked[key] for key in ("users", "indexes", "files", "fsck_files")} == {
        "users": 4,  # root and the three of the pillar
        "indexes": 4,  # root/pypi and the three of the pillar
        "files": WHEELS,
        "fsck_files": WHEELS,
    }
    assert checked["projects"] == projects_uploaded() == 15
    assert checked["seconds"] > 0


def test_a_release_file_with_other_bytes_is_named_with_both_hashes(scratch):
    name, old, new = change_bytes(scratch.export_path)
    failure = scratch.import_and_serve().failure()
    assert f"alice/dev: {name} has sha256 {new} on the server, {old} in the export" in failure


def test_a_release_file_missing_from_the_export_is_named(scratch):
    name = drop_file(scratch.export_path)
    failure = scratch.import_and_serve().failure()
    assert f"alice/prod: {name} is missing" in failure


def test_a_user_missing_from_the_export_is_named(scratch):
    drop_user(scratch.export_path, "carol")
    failure = scratch.import_and_serve().failure()
    assert "user carol is missing" in failure
    assert "alice" not in failure.split("holds:", 1)[1]  # only what differs is named


def test_an_index_setting_changed_in_the_export_is_named(scratch):
    set_index(scratch.export_path, "alice/prod", volatile=True)
    failure = scratch.import_and_serve().failure()
    assert "index alice/prod: volatile is True, exported False" in failure


def test_a_damaged_file_in_the_serverdir_fails_devpi_fsck(scratch):
    scratch.import_and_serve()
    victim = scratch.host.sh(f"find {scratch.serverdir}/+files/bob -name '*.whl' | sort | head -1").stdout.strip()
    scratch.host.sh(f"printf damaged >> {victim}")
    failure = scratch.failure()
    assert f"devpi-fsck of {scratch.serverdir} failed" in failure
    assert victim.removeprefix(f"{scratch.serverdir}/+files/") in failure


# --- a real upgrade that rolls back --------------------------------------------------------

TRAIL = f"{HOME}/data.operation.json"


def deb_version(deb: Path) -> str:
    """6.14.0-1 from sentry_6.14.0-1_amd64.deb."""
    return deb.name.split("_")[1]


@pytest.fixture
def old_deployment(apt_repo, old_sentry_deb, tmp_path):
    with new_host("health-upgrade") as host:
        use_apt_repo(host, apt_repo)
        salt = MasterlessSalt(host, pillar({"source": "repo", "version": deb_version(old_sentry_deb)}))
        run = salt.apply("sentry")
        assert run.succeeded, run.failed or run.errors
        upload_wheels(salt, tmp_path)
        yield salt


def data_on_disk(host) -> dict[str, str]:
    listed = host.sh(f"cd {HOME}/data/+files && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")
    return {path: digest for digest, path in (line.split(None, 1) for line in listed.stdout.splitlines())}


def test_an_export_damaged_while_the_upgrade_installs_makes_it_roll_back(old_deployment, sentry_deb, old_sentry_deb):
    salt, host = old_deployment, old_deployment.host
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    before = {"users": call(salt, "sentry_admin.list_users"), "files": data_on_disk(host)}
    assert len(before["files"]) == WHEELS and "carol" in before["users"]
    finished: list[subprocess.CompletedProcess] = []
    upgrading = threading.Thread(
        target=lambda: finished.append(
            salt.call("sentry_upgrade.master", new, "refresh=False", "method=export", check=False)
        )
    )
    upgrading.start()
    try:
        wait_for_step(host, TRAIL, "install")
        (export,) = host.sh(f"ls -d {HOME}/export-*").stdout.split()
        name, exported_hash, damaged_hash = change_bytes(host.path(export))
        drop_user(host.path(export), "carol")
    finally:
        upgrading.join(timeout=900)
    (ran,) = finished
    said = ran.stdout + ran.stderr
    assert ran.returncode != 0, said
    assert f"upgrade to {new} failed at step 'health check'" in said, said[-3000:]
    assert "user carol is missing" in said
    assert f"alice/dev: {name} has sha256 {damaged_hash} on the server, {exported_hash} in the export" in said
    assert "Rolled back:" in said and f"sentry {old} reinstalled" in said
    assert call(salt, "pkg.version", "sentry") == old
    assert call(salt, "sentry_server.status")["up"] is True
    assert {"users": call(salt, "sentry_admin.list_users"), "files": data_on_disk(host)} == before
    assert call(salt, "sentry_upgrade.last")["failed_step"] == "health check"
    assert not host.path(TRAIL).exists()
