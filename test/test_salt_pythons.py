"""The formula's modules on the Python Salt's own packages carry (issue 25): Salt 3006 on Python 3.10.

Salt's onedir packages 3006.0 to 3006.26 run minions, and so the formula's
``_modules``, ``_states``, ``_utils`` and ``_beacons``, on a Python 3.10 of
their own, not Debian's. Here that minion is Salt 3006.29 in a venv made with
this machine's Python 3.10 (pyenv's; script/bootstrap test makes
.venv-salt3006-py310 from test/salt-minions/3006-py310.lock), and its test host
sees that Python at its own path, as a onedir package's. Under the 3008
salt-master it deploys sentry, takes a backup and drills it, and answers the
health check and the monitor's records, whose times are UTC; a second apply
changes nothing. The unit tier passes on that Python too.

Where the machine has no Python 3.10, both tests skip, saying so.
"""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
from support.cluster import SaltCluster, changed, failed
from support.paths import REPO

VENV = REPO / ".venv-salt3006-py310"
MINION = "py310-minion"
ROOT_PASSWORD = "Py310-root-pw-4"


@pytest.fixture(scope="module")
def python310() -> str:
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no {VENV.name}: script/bootstrap test found no Python 3.10 (pyenv's, or python3.10 on PATH)")
    return str(python)


def test_the_unit_tier_passes_on_python_310(python310):
    ran = subprocess.run(
        [python310, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test/unit"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(ran.stdout[-3000:])
    assert ran.returncode == 0, ran.stdout[-8000:] + ran.stderr[-3000:]
    assert " passed" in ran.stdout.splitlines()[-1]


def utc(record: dict) -> datetime.datetime:
    """A record's ``time``, which must carry UTC's offset."""
    when = datetime.datetime.fromisoformat(record["time"])
    assert when.utcoffset() == datetime.timedelta(0), record
    return when


@pytest.mark.slow
def test_a_minion_on_python_310_deploys_backs_up_drills_and_checks_health(
    python310, salt_factories, sentry_deb, tmp_path
):
    pillar = {
        "sentry": {
            "package": {"source": "deb", "deb": str(sentry_deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "backup": {"enabled": True, "keep": 2, "schedule": "", "drill_schedule": ""},
        }
    }
    with SaltCluster(salt_factories, tmp_path, master_id="sentry-py310", first_host_number=70) as cluster:
        cluster.add_minions({MINION: pillar}, salt_versions={MINION: "3006-py310"})
        grains = cluster.salt(MINION, "grains.item", "saltversioninfo", "pythonversion").data[MINION]
        assert grains["saltversioninfo"][0] == 3006 and grains["pythonversion"][:2] == [3, 10], grains
        assert sys.version_info[:2] != (3, 10)  # the master's side is another Python: the minion's is its own

        first = cluster.apply(MINION, "sentry")[MINION]
        assert not failed(first), failed(first)
        assert "sentry-server-initialised" in changed(first)

        made = cluster.salt(MINION, "sentry_admin.backup", timeout=300).data[MINION]
        assert isinstance(made, dict) and made["success"] and made["error"] is None, made
        drilled = cluster.salt(MINION, "sentry_admin.verify_backup", timeout=300).data[MINION]
        assert isinstance(drilled, dict) and drilled["success"] and drilled["path"] == made["path"], drilled
        assert utc(drilled) >= utc(made)

        records = cluster.salt(MINION, "sentry_backup.last").data[MINION]
        assert records["backup"]["last_success"] == made and records["drill"]["last"] == drilled, records
        health = cluster.salt(MINION, "sentry_monitor.health").data[MINION]
        assert isinstance(health, dict) and health["level"] == "ok", health
        metrics = cluster.salt(MINION, "sentry_monitor.metrics").data[MINION]
        assert isinstance(metrics, str) and "sentry_up 1" in metrics, metrics

        again = cluster.apply(MINION, "sentry")[MINION]
        assert not failed(again) and changed(again) == {}, (failed(again), changed(again))
