"""README's two commands in README's order on one machine: script/deploy, then the tests.

The machine is a test host (a clean Debian root with this repository, as a
fresh clone). It deploys sentry as a newcomer would, then runs part of the
suite, whose own test hosts are nested inside it. The suite must pass even
though the machine has a sentry of its own (another root password, a
supervisor program, an nginx site), and leave that deployment untouched:
the same files with the same sha256 under /var/lib/sentry, the same server
process, the same nginx site and master process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.host_roots import new_host
from support.paths import REPO

pytestmark = pytest.mark.slow

# Tests that deploy sentry in hosts of their own: they failed when hosts saw the machine's deployment.
INNER_TESTS = [
    "test/test_formula.py::test_first_apply_succeeds",
    "test/test_formula.py::test_second_apply_changes_nothing",
    "test/test_formula.py::test_upload_then_pip_install_through_nginx",
]


def deployment_snapshot(machine) -> dict[str, str]:
    return {
        "data": machine.sh("find /var/lib/sentry -type f -print0 | sort -z | xargs -0 sha256sum").stdout,
        "program": machine.run(["supervisorctl", "pid", "sentry-server"]).stdout,
        "site": machine.run(["sha256sum", "/etc/nginx/sites-available/sentry.conf"]).stdout,
        "enabled": machine.run(["ls", "-l", "/etc/nginx/sites-enabled"]).stdout,
        "nginx": machine.run(["cat", "/run/nginx.pid"]).stdout,
    }


def test_deploy_then_the_suite_on_the_same_machine(sentry_deb):
    with new_host("readme") as machine:
        machine.run(["rm", "-rf", f"{REPO}/.salt-local", f"{REPO}/.pytest_cache"])
        # Debian's apt sources, as on any machine: the nested run finds the clean
        # root this run made (script/make-hostroot keys it on them) instead of building one.
        for sources in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
            if sources.is_file():
                machine.path(sources.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy(sources, machine.path(sources))
        deployed = machine.run([str(REPO / "script" / "deploy")], timeout=900)
        assert "sentry answers at" in deployed.stdout
        before = deployment_snapshot(machine)

        suite = machine.sh(
            f"cd {REPO} && .venv/bin/pytest -q -p no:cacheprovider {' '.join(INNER_TESTS)}", check=False, timeout=1200
        )
        assert suite.returncode == 0, suite.stdout[-5000:] + suite.stderr[-3000:]
        assert f"{len(INNER_TESTS)} passed" in suite.stdout

        assert deployment_snapshot(machine) == before
        assert machine.run(["ip", "netns", "list"]).stdout.strip() == ""
