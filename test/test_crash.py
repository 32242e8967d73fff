"""Crash safety (issue 12): kill -9 of salt-call and all its children in the middle of an export, an
import and a master upgrade, then apply; recover, or run the upgrade again (a replica upgrade:
test_crash_replica.py; what both share: support/crash.py).

One test host is deployed at the older sentry version from a local apt
repository, with a user, two indexes and WHEELS release files. Each case
starts salt-call in the background in a session of its own, watches the
trail the operation keeps beside the serverdir (``data.operation.json``)
every 20 ms, and at the chosen step freezes and kills (SIGKILL) every process
of that session, dpkg and sentry-server's devpi-import included. Supervisord and the server
it runs are not in that session: they live on, as they would on a real host.

After the kill: ``state.apply sentry`` refuses, names the trail's backup and
``sentry_data.recover``, and starts nothing; a restarted supervisord (as at
boot) does not serve either. Then ``sentry_data.recover`` (or the upgrade
again) brings back every user, index and release file with the same sha256,
served through nginx, the package at a coherent version, ``dpkg --audit``
clean, and an apply that changes nothing. The cases share the host and leave
it as they found it (the older version, the same data): 3 to 8 minutes in
all on a 2-core machine shared with other runs. Master upgrades are killed
both ways they go (issue 17): by export and import (``method=export``) and in
place (``method=auto``: at the snapshot, in dpkg, at the new server's start); in
place the serverdir is never moved, and it must be whole after every kill.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from support.aptrepo import use_apt_repo
from support.client import sentry_client
from support.crash import (
    BASE_EXPORT,
    HOME,
    INDEXES,
    KILL_TIMEOUT,
    NGINX_URL,
    OWNER,
    OWNER_PASSWORD,
    POLL,
    PRERM,
    PRERM_ENTERED,
    PROGRAM,
    SERVER_URL,
    SERVERDIR,
    TRAIL,
    WHEELS,
    Crashable,
    Operation,
    assert_not_serving,
    assert_refused,
    assert_supervisor_restart_does_not_serve,
    deb_version,
    importing,
    killing_point,
    pillar,
    runs_import,
    scratch_dirs,
)
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.wheels import make_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crashable(apt_repo, old_sentry_deb, sentry_deb, tmp_path_factory):
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    started = time.monotonic()
    with new_host("crash") as host:
        use_apt_repo(host, apt_repo)
        salt = MasterlessSalt(host, pillar(old))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        folder = tmp_path_factory.mktemp("crash-wheels")
        wheels = {}
        for number in range(WHEELS):
            target = INDEXES[number % len(INDEXES)].replace("/", "-")
            (folder / target).mkdir(exist_ok=True)
            wheel = make_wheel(folder / target, f"crash-probe-{number % 7}", f"1.{number}", payload=str(number) * 60)
            wheels[wheel.name] = hashlib.sha256(wheel.read_bytes()).hexdigest()
        for index in INDEXES:
            local = folder / index.replace("/", "-")
            inside = host.path(f"/srv/wheels/{local.name}")
            inside.mkdir(parents=True)
            for wheel in local.iterdir():
                (inside / wheel.name).write_bytes(wheel.read_bytes())
            sentry_client(host, "use", f"{NGINX_URL}/{index}")
            sentry_client(host, "login", OWNER, password=OWNER_PASSWORD)
            host.sh(f"DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload /srv/wheels/{local.name}/*.whl")
        deployment = Crashable(salt, old, new, wheels)
        deployment.baseline = deployment.snapshot()
        assert len(deployment.baseline["served"]) == WHEELS, deployment.baseline["served"]
        assert deployment.baseline["served"] == deployment.baseline["on_disk"]
        assert {name.rsplit("/", 1)[1]: digest for name, digest in deployment.baseline["served"].items()} == wheels
        deployment.call("sentry_data.export", f"dest={BASE_EXPORT}")
        print(f"\ncrash host deployed at {old} with {WHEELS} release files in {time.monotonic() - started:.1f}s")
        yield deployment


@pytest.fixture
def at_baseline(crashable):
    """Each case starts from the older version serving the baseline data, with nothing left by earlier ones."""
    if crashable.host.path(TRAIL).exists():  # an earlier case failed half-way: do not fail this one for it
        crashable.salt.call("sentry_data.recover", check=False)
    crashable.clear_leftovers()
    assert crashable.version() == crashable.old
    assert not crashable.host.path(TRAIL).exists()
    assert crashable.answers(f"{SERVER_URL}/+api") and crashable.answers(f"{NGINX_URL}/+api")
    started = time.monotonic()
    yield crashable
    print(f"case took {time.monotonic() - started:.1f}s")


# --- the cases ------------------------------------------------------------------


def test_a_killed_export_leaves_only_an_incomplete_one_and_the_next_apply_serves_again(at_baseline):
    deployment = at_baseline
    dest = f"{HOME}/export-killed"
    operation = Operation(deployment, "sentry_data.export", f"dest={dest}")
    partial = deployment.host.path(dest + ".incomplete")
    deadline = time.monotonic() + KILL_TIMEOUT
    while not (partial.is_dir() and any(partial.iterdir())):
        assert operation.running() and not deployment.host.path(dest).exists(), operation.output()
        assert time.monotonic() < deadline
        time.sleep(POLL)
    killed = operation.kill()
    assert any("devpi-export" in command for command in killed), killed
    assert not deployment.host.path(dest).exists(), "the export completed before the kill"
    assert partial.is_dir()
    assert_not_serving(deployment)  # the export had stopped it
    listed = deployment.call("sentry_data.backups")
    assert dest + ".incomplete" not in listed["export"] and dest not in listed["export"], listed

    applied = deployment.apply()
    assert applied.succeeded, applied.failed or applied.errors
    assert applied.changed.get("sentry-supervisor-program-running"), applied.changed
    deployment.assert_as_before(deployment.old)


def test_a_killed_import_is_refused_then_recovered_with_nothing_lost(at_baseline):
    deployment = at_baseline
    operation = Operation(deployment, "sentry_data.import", BASE_EXPORT, "move_aside=True")
    trail = operation.wait_until(
        "devpi-import ran with the data aside",
        lambda operation, trail: (
            trail.get("step") == "import"
            and trail.get("backup")
            and deployment.host.path(trail["backup"]).is_dir()
            and importing(operation)
        ),
    )
    killed = operation.kill()
    assert any(runs_import(command) for command in killed), killed
    trail = operation.trail()
    backup = trail["backup"]
    assert trail["operation"] == "import" and trail["step"] == "import", trail
    assert not any(deployment.host.path(SERVERDIR).iterdir()), "the import finished before the kill"
    assert scratch_dirs(deployment), "devpi-import left nothing half made"

    # (a) the apply refuses and starts nothing; the data aside is intact
    assert_refused(deployment, trail)
    assert_not_serving(deployment)
    assert not any(deployment.host.path(SERVERDIR).iterdir())
    assert deployment.disk(backup) == deployment.baseline["on_disk"]
    # (b) nor does a supervisord started afresh, as at boot
    assert_supervisor_restart_does_not_serve(deployment)

    # (c) recover says what it did
    recovered = deployment.call("sentry_data.recover")
    print(f"recover: {recovered}")
    assert recovered["recovered"] is True and recovered["rolled_back"] is True, recovered
    assert recovered["operation"] == "import" and recovered["step"] == "import", recovered
    done = " ".join(recovered["done"])
    assert f"the data is back in {SERVERDIR}" in done and f"{PROGRAM} running" in done, recovered

    # (e) what the import had written is kept as a failed attempt, the backup went back
    listed = deployment.call("sentry_data.backups")
    assert listed["backup"] == [], listed
    assert len(listed["failed"]) == 1, listed
    failed = listed["failed"][0]
    assert failed in done, recovered
    assert any(deployment.host.path(failed).iterdir()), failed  # what devpi-import had written
    assert scratch_dirs(deployment) == []
    assert deployment.host.path(f"{BASE_EXPORT}/dataindex.json").exists()

    # (d) everything as before, and the formula agrees
    deployment.assert_as_before(deployment.old)


# (method, step it is killed at, how it is mended): each step both ways would double the time; dpkg's
# both ways. method auto goes in place here (6.14 -> 6.20: one devpi database version).
UPGRADE_CASES = [
    ("export", "export", "recover"),
    ("export", "install", "recover"),
    ("export", "install", "rerun"),
    # In the old package's prerm, on purpose (not by timing): dpkg then leaves it 'reinstreq', which a plain
    # install refuses to configure ("very bad inconsistent state"): the rerun and recover reinstall it.
    ("export", "install in prerm", "recover"),
    ("export", "install in prerm", "rerun"),
    ("export", "import", "recover"),
    ("export", "start server", "rerun"),
    ("auto", "snapshot", "recover"),
    ("auto", "install", "rerun"),
    ("auto", "start server", "recover"),
]


def hold_in_prerm(deployment: Crashable) -> None:
    """The installed package's prerm, run by the upgrade's dpkg ('prerm upgrade NEW'), waits there the first
    time, having said so (PRERM_ENTERED): the kill lands inside it."""
    hold = f"[ -e {PRERM_ENTERED} ] || {{ touch {PRERM_ENTERED}; sleep 120; }}  # sentry-test-prerm\n"
    script = deployment.host.path(PRERM)
    shebang, rest = script.read_text().split("\n", 1)
    script.write_text(f"{shebang}\n{hold}{rest}")


def killed_as_meant(deployment: Crashable, step: str, killed: list[str]) -> None:
    """The kill at ``step`` hit what it was meant to: the prerm, dpkg, the import."""
    if step == "install in prerm":
        assert any("sentry.prerm" in command for command in killed), killed
        print(f"dpkg says: {deployment.host.run(['dpkg-query', '-W', '-f=${Status}', 'sentry']).stdout}")
    if step == "install":
        assert any("dpkg" in command for command in killed), killed
        audit = deployment.host.run(["dpkg", "--audit"], check=False).stdout.strip()
        print(f"dpkg --audit: {audit}")
        assert audit, "dpkg was not interrupted"
    if step == "import":
        assert any(runs_import(command) for command in killed), killed


@pytest.mark.parametrize(
    ("method", "step", "way"),
    UPGRADE_CASES,
    ids=[f"{'in place ' if method == 'auto' else ''}{step}-{way}" for method, step, way in UPGRADE_CASES],
)
def test_a_killed_master_upgrade_is_refused_then_mended(at_baseline, method, step, way):
    deployment = at_baseline
    upgrade = ("sentry_upgrade.master", deployment.new, "refresh=False", f"method={method}")
    if step == "snapshot":
        # A few release files are linked in milliseconds: a copied file that takes a while (its name sorts
        # first) keeps the snapshot going long enough to be killed in the middle of it.
        deployment.host.sh(f"head -c 200M /dev/zero > {SERVERDIR}/.padding && chown sentry:sentry {SERVERDIR}/.padding")
    trail_step = step.split(" in ")[0]  # "install in prerm": the step is install
    if step == "install in prerm":
        deployment.host.run(["rm", "-f", PRERM_ENTERED])
        hold_in_prerm(deployment)
    operation = Operation(deployment, *upgrade)
    operation.wait_until(f"step {step!r}", killing_point(deployment, step))
    if step == "install":
        time.sleep(0.3)  # well into dpkg's unpacking
    killed = operation.kill()
    trail = operation.trail()
    assert trail["operation"] == "upgrade" and trail["step"] == trail_step, (trail, killed)
    killed_as_meant(deployment, step, killed)
    if trail.get("backup"):
        assert deployment.disk(trail["backup"]) == deployment.baseline["on_disk"]
    if method == "auto":  # in place: the serverdir stays where it is, whole, the snapshot beside it
        assert trail.get("snapshot"), trail
        assert deployment.disk(SERVERDIR) == deployment.baseline["on_disk"]

    assert_refused(deployment, trail)
    assert not deployment.answers(f"{NGINX_URL}/+api"), "nginx was started over the trail"
    if method == "export" and trail_step in ("install", "import"):
        assert not any(deployment.host.path(SERVERDIR).iterdir()), "something was initialised over the trail"
    if step in ("start server", "health check"):
        # The server the upgrade started runs on; restarted without its upgrade, it does not serve.
        assert_supervisor_restart_does_not_serve(deployment)
    else:
        assert_not_serving(deployment)

    if way == "recover":
        recovered = deployment.call("sentry_data.recover")
        print(f"recover: {recovered}")
        assert recovered["rolled_back"] is True and recovered["step"] == trail_step, recovered
        expected = deployment.old
    else:
        result = deployment.call(*upgrade)
        print(f"rerun: recovered first {result.get('recovered_first')}; steps {result['steps']}")
        assert result["changed"] is True and result["recovered_first"]["rolled_back"] is True, result
        assert result["method"]["method"] == ("in_place" if method == "auto" else "export_import"), result
        assert result["version"] == {"old": deployment.old, "new": deployment.new}, result
        expected = deployment.new
    deployment.assert_as_before(expected)
    deployment.host.sh(f"rm -f {SERVERDIR}/.padding")
    if way == "rerun":
        back_to_old(deployment, result["backup"])


def back_to_old(deployment: Crashable, backup: str) -> None:
    """The older version on the data it had (the backup the upgrade made), for the next case."""
    host = deployment.host
    host.run(["supervisorctl", "stop", PROGRAM])
    host.sh(f"rm -rf {SERVERDIR} && mv {backup} {SERVERDIR}")
    host.run(
        ["apt-get", "install", "-y", "-q", "--allow-downgrades", f"sentry={deployment.old}"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    applied = deployment.apply(deployment.old)
    assert applied.succeeded, applied.failed or applied.errors
    assert deployment.snapshot() == deployment.baseline
