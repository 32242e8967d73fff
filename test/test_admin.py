"""_modules/sentry_admin.py against a real deployed server, through salt-call."""

from __future__ import annotations

import json
import shutil

import pytest
from support.argv import ArgvWatch
from support.client import sentry_client
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import DEFAULT_VERSION, deb_version_for
from support.wheels import make_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(sentry_deb):
    with new_host("admin") as host:
        salt = MasterlessSalt(
            host,
            {
                "sentry": {
                    "package": {"source": "deb", "deb": str(sentry_deb)},
                    "server": {"root_password": "Admin-Root-pw-5", "offline_mode": True},
                }
            },
        )
        run = salt.apply("sentry")
        assert run.succeeded, run.failed or run.errors
        yield salt


def call(salt: MasterlessSalt, *args: str):
    return json.loads(salt.call(*args).stdout)["local"]


def test_status_of_a_master(deployed):
    status = call(deployed, "sentry_admin.status")
    assert status["up"] is True
    assert status["role"] == "master"
    assert status["url"] == "http://127.0.0.1:3141"
    assert isinstance(status["serial"], int) and status["serial"] >= 0
    assert status["serverdir"] == "/var/lib/sentry/data"


def test_version_names_package_and_server(deployed):
    assert call(deployed, "sentry_admin.version") == {
        "package": deb_version_for(),
        "server": DEFAULT_VERSION,
    }


def test_users_and_indexes(deployed):
    assert call(deployed, "sentry_admin.list_users") == ["root"]
    indexes = call(deployed, "sentry_admin.list_indexes")
    assert indexes["root/pypi"]["type"] == "mirror"


def test_a_server_that_does_not_answer_says_so(deployed):
    failed = deployed.call("sentry_admin.status", "url=http://127.0.0.1:9", check=False)
    assert failed.returncode != 0
    assert "does not answer" in failed.stdout + failed.stderr
    assert json.loads(failed.stdout)["local"]["up"] is False  # still a report, saying what it saw


def test_module_explains_why_it_is_unavailable(bare_host):
    salt = MasterlessSalt(bare_host)
    failed = salt.call("sentry_admin.status", check=False)
    assert failed.returncode != 0
    assert "the sentry package is not installed" in failed.stdout + failed.stderr


ALICE_PASSWORD = "Alice-Boot-pw-77"
BOB_PASSWORD = "Bob-Boot-pw-78"


def bootstrap_pillar(alice_password: str = ALICE_PASSWORD, prod_volatile: bool = False) -> dict:
    return {
        "users": {
            "alice": {"password": alice_password, "email": "alice@example.org"},
            "bob": {"password": BOB_PASSWORD},
        },
        "indexes": {
            "alice/prod": {"bases": ["alice/dev"], "volatile": prod_volatile, "acl_upload": ["alice", "bob"]},
            "alice/dev": {"bases": ["root/pypi"]},
            "bob/tmp": {"volatile": True},
        },
    }


def apply_bootstrap(deployed, bootstrap: dict, *args: str):
    pillar = json.loads(deployed.host.path(f"{MasterlessSalt.CONF}/pillar/test.json").read_text())
    pillar["sentry"]["bootstrap"] = bootstrap
    deployed.set_pillar(pillar)
    return deployed.apply("sentry.bootstrap", *args)


def test_bootstrap_makes_users_and_indexes_then_changes_nothing(deployed):
    planned = apply_bootstrap(deployed, bootstrap_pillar(), "test=True")
    assert planned.returncode == 0 and planned.failed == {}
    assert {"sentry-bootstrap-user-alice", "sentry-bootstrap-index-alice/prod"} <= {
        key.split("_|-")[1] for key, result in planned.states.items() if result["result"] is None
    }
    assert call(deployed, "sentry_admin.list_users") == ["root"]

    made = apply_bootstrap(deployed, bootstrap_pillar())
    assert made.succeeded, made.failed
    assert set(made.changed) == {
        "sentry-bootstrap-user-alice",
        "sentry-bootstrap-user-bob",
        "sentry-bootstrap-index-alice/dev",
        "sentry-bootstrap-index-alice/prod",
        "sentry-bootstrap-index-bob/tmp",
    }
    indexes = call(deployed, "sentry_admin.list_indexes")
    assert indexes["alice/prod"]["bases"] == ["alice/dev"]
    assert indexes["alice/prod"]["acl_upload"] == ["alice", "bob"]
    assert indexes["alice/prod"]["volatile"] is False
    assert indexes["bob/tmp"]["volatile"] is True
    assert apply_bootstrap(deployed, bootstrap_pillar()).changed == {}


def test_bootstrap_changes_only_what_differs(deployed):
    assert apply_bootstrap(deployed, bootstrap_pillar()).succeeded
    changed = apply_bootstrap(deployed, bootstrap_pillar(alice_password="Alice-New-pw-79", prod_volatile=True))
    assert changed.succeeded, changed.failed
    assert changed.changed == {
        "sentry-bootstrap-user-alice": {"password": {"old": "<hidden>", "new": "<hidden>"}},
        "sentry-bootstrap-index-alice/prod": {"volatile": {"old": False, "new": True}},
    }
    assert call(deployed, "sentry_admin.user_password_matches", "alice", "Alice-New-pw-79") is True


def test_bootstrap_index_function_is_idempotent(deployed):
    first = call(deployed, "sentry_admin.bootstrap_index", "carol", "dev", f"password={BOB_PASSWORD}")
    assert first["user_created"] is True and first["created"] is True
    second = call(deployed, "sentry_admin.bootstrap_index", "carol", "dev")
    assert second["user_created"] is False and second["created"] is False and second["changed"] == []


def test_passwords_stay_out_of_output_log_and_process_list(deployed):
    with ArgvWatch() as argv:  # every command line while the passwords are set, sampled every 20 ms
        run = apply_bootstrap(deployed, bootstrap_pillar(alice_password="Alice-Log-pw-80"))
    assert run.succeeded, run.failed
    assert any("salt-call" in command for command in argv.seen), "the sampler saw nothing"
    log = deployed.host.path(f"{MasterlessSalt.CONF}/root/var/log/salt/minion").read_text()
    processes = "\n".join(argv.seen)
    for secret in ("Alice-Log-pw-80", BOB_PASSWORD, "Admin-Root-pw-5"):
        assert secret not in run.stdout + run.stderr
        assert secret not in log
        assert secret not in processes


@pytest.mark.parametrize(
    ("bootstrap", "message"),
    [
        ({"users": {"bad name": {"password": "x"}}}, "a user name has no spaces or slashes"),
        ({"indexes": {"alice/dev/x": {}}}, "an index is named user/index"),
        ({"indexes": {"alice/dev": {"base": ["root/pypi"]}}}, "unknown key sentry:bootstrap:indexes:alice/dev:base"),
        ({"users": {"dave": {"passwd": "x"}}}, "unknown key sentry:bootstrap:users:dave:passwd"),
    ],
)
def test_bad_bootstrap_pillar_fails_at_render(deployed, bootstrap, message):
    run = apply_bootstrap(deployed, bootstrap)
    assert run.returncode != 0
    assert message in run.errors


def test_index_on_a_missing_base_fails_clearly(deployed):
    run = apply_bootstrap(deployed, {"indexes": {"root/broken": {"bases": ["nobody/nothing"]}}})
    assert not run.succeeded
    assert "base index nobody/nothing of root/broken does not exist" in str(run.failed)
    assert call(deployed, "sentry_admin.index_get", "root/broken") is None


# --- export and import ---------------------------------------------------------

RELEASE_FILES = 200
OWNERS = {"dave": "Dave-Export-pw-1", "erin": "Erin-Export-pw-2"}
TARGETS = ("dave/one", "dave/two", "erin/three")


def files_by_path(host, serverdir: str) -> dict[str, str]:
    """sha256 of every release file below a serverdir, by its path there."""
    listed = host.sh(f"cd {serverdir}/+files && find . -type f -name '*.whl' -print0 | sort -z | xargs -0 -r sha256sum")
    return {path: digest for digest, path in (line.split(None, 1) for line in listed.stdout.splitlines())}


@pytest.fixture(scope="module")
def exported(deployed, tmp_path_factory):
    """RELEASE_FILES wheels in 3 indexes of 2 users, then an export of it all."""
    host = deployed.host
    for owner, password in OWNERS.items():
        call(deployed, "sentry_admin.user_set", owner, f"password={password}")
    for target in TARGETS:
        call(deployed, "sentry_admin.index_set", target, "bases=[root/pypi]")
    wheels = tmp_path_factory.mktemp("export-wheels")
    for number in range(RELEASE_FILES):
        target = TARGETS[number % len(TARGETS)]
        folder = wheels / target.replace("/", "-")
        folder.mkdir(exist_ok=True)
        make_wheel(folder, f"export-probe-{number % 70}", f"1.{number}", payload=str(number) * 50)
    shutil.copytree(wheels, host.path("/tmp/export-wheels"))
    for target in TARGETS:
        owner = target.split("/")[0]
        sentry_client(host, "use", f"http://127.0.0.1:3141/{target}")
        sentry_client(host, "login", owner, password=OWNERS[owner])
        host.sh(f"DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /tmp/export-wheels/{target.replace('/', '-')}/*.whl")
    result = call(deployed, "sentry_admin.export", "dest=/var/lib/sentry/export-test")
    return result


def test_export_counts_and_restarts_the_server(deployed, exported):
    assert exported["path"] == "/var/lib/sentry/export-test"
    assert exported["files"] == RELEASE_FILES
    assert exported["indexes"] >= len(TARGETS) + 1 and exported["users"] >= len(OWNERS) + 1
    assert call(deployed, "sentry_admin.status")["up"] is True


def test_import_round_trip_keeps_every_file(deployed, exported):
    imported = call(deployed, "sentry_admin.import", exported["path"], "serverdir=/var/lib/sentry/imported")
    assert {key: imported[key] for key in ("users", "indexes", "files")} == {
        key: exported[key] for key in ("users", "indexes", "files")
    }
    original = files_by_path(deployed.host, "/var/lib/sentry/data")
    assert len(original) == RELEASE_FILES
    assert files_by_path(deployed.host, "/var/lib/sentry/imported") == original
    owners = deployed.host.sh("find /var/lib/sentry/imported ! -user sentry | head -3").stdout
    assert owners == ""


def data_snapshot(salt: MasterlessSalt) -> dict:
    """Every release file's checksum, the users and the indexes: what a refused import must leave alone.

    Not the database's size nor the serial: a freshly started server checkpoints
    its sqlite file and commits its own bookkeeping whenever it likes.
    """
    return {
        "files": files_by_path(salt.host, "/var/lib/sentry/data"),
        "users": call(salt, "sentry_admin.list_users"),
        "indexes": call(salt, "sentry_admin.list_indexes"),
    }


def test_import_into_a_serverdir_with_data_is_refused(deployed, exported):
    before = data_snapshot(deployed)
    refused = deployed.call("sentry_admin.import", exported["path"], check=False)
    assert refused.returncode != 0
    assert "holds data; import only goes into a fresh one" in refused.stdout + refused.stderr
    assert data_snapshot(deployed) == before
    assert call(deployed, "sentry_admin.status")["up"] is True


def test_export_into_a_non_empty_path_is_refused(deployed, exported):
    refused = deployed.call("sentry_admin.export", f"dest={exported['path']}", check=False)
    assert refused.returncode != 0
    assert "exists and is not empty" in refused.stdout + refused.stderr
    inside = deployed.call("sentry_admin.export", "dest=/var/lib/sentry/data/export", check=False)
    assert "lies inside the serverdir" in inside.stdout + inside.stderr


def test_truncated_export_fails_and_keeps_the_old_data(deployed, exported):
    host = deployed.host
    host.sh(
        f"cp -a {exported['path']} /var/lib/sentry/export-broken && find /var/lib/sentry/export-broken"
        " -name '*.whl' | head -5 | xargs rm"
    )
    before = files_by_path(host, "/var/lib/sentry/imported")
    failed = deployed.call(
        "sentry_admin.import",
        "/var/lib/sentry/export-broken",
        "serverdir=/var/lib/sentry/imported",
        "move_aside=True",
        check=False,
    )
    assert failed.returncode != 0
    assert "import of /var/lib/sentry/export-broken failed" in failed.stdout + failed.stderr
    assert files_by_path(host, "/var/lib/sentry/imported") == before
    assert "_data-backup-" not in host.sh("ls /var/lib/sentry").stdout


def test_move_aside_keeps_the_old_data_as_a_backup(deployed, exported):
    """The serverdir's files go aside whole (each file's sha256 by its path), and the import brings the export's."""
    host = deployed.host
    host.sh("echo kept > /var/lib/sentry/imported/+files/marker-of-the-old-data")  # the old data, told apart
    before = files_by_path(host, "/var/lib/sentry/imported")
    old_database = host.sh("sha256sum < /var/lib/sentry/imported/.sqlite").stdout
    moved = call(
        deployed, "sentry_admin.import", exported["path"], "serverdir=/var/lib/sentry/imported", "move_aside=True"
    )
    assert moved["backup"].startswith("/var/lib/sentry/_imported-backup-")  # named after the serverdir
    assert len(before) == RELEASE_FILES
    assert files_by_path(host, moved["backup"]) == before
    assert host.path(f"{moved['backup']}/+files/marker-of-the-old-data").read_text() == "kept\n"
    assert host.sh(f"sha256sum < {moved['backup']}/.sqlite").stdout == old_database
    assert files_by_path(host, "/var/lib/sentry/imported") == files_by_path(host, "/var/lib/sentry/data")
    assert not host.path("/var/lib/sentry/imported/+files/marker-of-the-old-data").exists()


def test_an_import_over_a_serverdir_that_is_a_mount_point_is_refused_before_anything_changes(deployed, exported):
    """Data on a volume of its own, mounted at the serverdir: it cannot be renamed aside (EBUSY), so the
    import refuses at once and says what to set (issue 29, item 4)."""
    host, mounted = deployed.host, "/var/lib/sentry/mounted"
    host.sh(f"mkdir -p {mounted} && mount -t tmpfs -o size=64m,mode=0750 sentry-volume {mounted}")
    try:
        host.sh(f"cp -a /var/lib/sentry/imported/. {mounted}/ && chown sentry:sentry {mounted}")
        before = files_by_path(host, mounted)
        refused = deployed.call(
            "sentry_admin.import", exported["path"], f"serverdir={mounted}", "move_aside=True", check=False
        )
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "Traceback" not in said, said
        assert f"nothing was changed: {mounted} is a mount point, which cannot be moved aside" in said, said
        assert "set sentry:server:serverdir to a folder inside the volume" in said
        assert files_by_path(host, mounted) == before and len(before) == RELEASE_FILES
        assert "_mounted-backup-" not in host.sh("ls -a /var/lib/sentry").stdout
        assert not host.path(f"{mounted}.operation.json").exists()
    finally:
        host.sh(f"umount {mounted} && rmdir {mounted}")


def test_an_export_with_a_link_to_a_root_only_file_never_brings_it_into_the_index(deployed, exported):
    """The export is the service user's work: a server taken over could put links in it. The import runs as
    the service user, so a link to what only root may read fails the import, and the data stays (issue 29,
    item 1). Run as root, it would have read the file into the index (hashes left out: it computes them)."""
    host, planted = deployed.host, "/var/lib/sentry/export-planted"
    host.sh("umask 077 && echo ROOT-ONLY-SECRET-29 > /root/only-root.txt")
    host.sh(f"rm -rf {planted} && cp -a {exported['path']} {planted}")
    index = json.loads(host.path(f"{planted}/dataindex.json").read_text())
    files = [file for stage in index["indexes"].values() for file in stage.get("files", [])]
    (entry,) = [file for file in files if file["type"] == "releasefile"][:1]
    entry.get("entrymapping", {}).pop("hashes", None)
    entry.get("entrymapping", {}).pop("hash_spec", None)
    host.path(f"{planted}/dataindex.json").write_text(json.dumps(index))
    link = f"{planted}/{entry['relpath']}"
    host.sh(f"ln -sf /root/only-root.txt {link} && chown -h sentry:sentry {link}")
    before = files_by_path(host, "/var/lib/sentry/imported")
    try:
        failed = deployed.call(
            "sentry_admin.import", planted, "serverdir=/var/lib/sentry/imported", "move_aside=True", check=False
        )
        assert failed.returncode != 0, failed.stdout
        assert f"import of {planted} failed" in failed.stdout + failed.stderr
        assert files_by_path(host, "/var/lib/sentry/imported") == before  # put back
        leaked = host.run(["grep", "-rl", "ROOT-ONLY-SECRET-29", "/var/lib/sentry"], check=False)
        assert leaked.returncode == 1, leaked.stdout
    finally:
        host.sh(f"rm -rf {planted} /root/only-root.txt /var/lib/sentry/_imported-failed-*")
