"""Pytest hooks and shared fixtures: the real sentry deb, test hosts, servers running inside them.

Helpers live in the ``support`` package (test/support/), which tests import directly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import timing
from support.aptrepo import make_apt_repo
from support.debs import build_deb, install_deb, known_versions
from support.host_roots import host_name, host_root, new_host
from support.hosts import NAME_PREFIX, hold_runs_lock, remove_bridge
from support.paths import DEFAULT_VERSION, REPO, UNIT_TIER
from support.salt_factories import salt_factories_config  # noqa: F401 (a fixture, for every test)
from support.shards import parse as parse_shard
from support.shards import run_claiming
from support.shards import select as select_shard
from support.sigterm import SigtermAsCtrlC

_sigterm_as_ctrl_c = SigtermAsCtrlC()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shard",
        metavar="K/N",
        help="run shard K of N: whole test modules dealt out by their usual length (support/shards.py)",
    )
    parser.addoption(
        "--shard-queue",
        metavar="DIR",
        help="with --shard: take modules one at a time from a queue other shards share through DIR",
    )


_run_started: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    _sigterm_as_ctrl_c.install()
    _run_started.update(wall=time.monotonic(), cpu=timing.cpu_times())
    if config.getoption("shard"):
        parse_shard(config.getoption("shard"))  # a usage error before anything is collected


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("shard") or config.getoption("shard_queue"):
        return
    kept, deselected = select_shard(items, parse_shard(config.getoption("shard")))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_unconfigure(config: pytest.Config) -> None:
    _sigterm_as_ctrl_c.uninstall()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every test's wall seconds and outcome, for the run's time report (support/timing.py)."""
    outcome = None
    if report.when == "call":
        outcome = report.outcome
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "skipped"
    timing.RUN.record_test(report.nodeid, report.duration, outcome)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Where the time went: to the file script/test merges its shards from, or printed for a run alone."""
    wall = time.monotonic() - _run_started["wall"]
    cpu_busy = timing.busy_share(_run_started["cpu"], timing.cpu_times())
    figures = timing.RUN.snapshot(wall, cpu_busy)
    destination = os.environ.get("SENTRY_TEST_TIMING")
    if destination:
        Path(destination).write_text(json.dumps(figures))
    else:
        terminalreporter.write_line(timing.report([figures]))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """With --shard-queue: run the modules this shard claims (support/shards.py); else pytest's own loop."""
    queue = session.config.getoption("shard_queue")
    if not queue or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
    run_claiming(session, Path(queue))
    return True


@pytest.fixture(scope="session", autouse=True)
def systemd_root(request: pytest.FixtureRequest) -> Path | None:
    """The default hosts' root, made (or found) once before the first test rather than inside one.

    Not for a run of the unit tier alone (test/unit): it needs no host, no root and no mmdebstrap.
    """
    if all(UNIT_TIER in item.path.parents for item in request.session.items):
        return None
    return host_root("systemd")


@pytest.fixture(scope="session")
def nosystemd_root() -> Path:
    """The root of hosts without systemd: Debian's init scripts and ``service`` only."""
    return host_root("nosystemd")


@pytest.fixture(scope="session", autouse=True)
def _leave_no_bridge():
    """Multi-host tests share a bridge; the machine has it only while some test run is on."""
    hold_runs_lock()
    yield
    remove_bridge()


@pytest.fixture(scope="session")
def sentry_deb() -> Path:
    return build_deb(DEFAULT_VERSION)


@pytest.fixture(scope="session")
def old_sentry_deb() -> Path:
    older = [v for v in known_versions() if v != DEFAULT_VERSION]
    assert older, "packaging/pins needs an older devpi-server version beside the default"
    return build_deb(older[0])


@pytest.fixture(scope="session")
def apt_repo(sentry_deb, old_sentry_deb) -> Path:
    """A flat apt repository of both debs (see support/aptrepo.py); hosts use it through ``use_apt_repo``."""
    # One per test run (SENTRY_TEST_PREFIX): runs sharing build/ do not remake each other's.
    directory = REPO / "build" / ("apt-" + NAME_PREFIX if NAME_PREFIX else "apt")
    return make_apt_repo(directory, [sentry_deb, old_sentry_deb])


@pytest.fixture
def bare_host(request):
    """A fresh test host with nothing installed; gone after the test."""
    with new_host(host_name(request)) as host:
        yield host


@pytest.fixture
def nosystemd_host(request, nosystemd_root):
    """A fresh test host without systemd (no systemctl), as bare as ``bare_host``; gone after the test."""
    with new_host(host_name(request), kind="nosystemd") as host:
        yield host


@pytest.fixture(scope="module")
def sentry_host(sentry_deb):
    """A test host with the sentry deb installed, shared by one test module."""
    with new_host("pkg") as host:
        install_deb(host, sentry_deb)
        yield host
