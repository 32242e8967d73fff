"""Shared fixtures: the real sentry deb, test hosts, servers running inside them."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aptrepo import make_apt_repo
from hosts import NAME_PREFIX, TestHost, TestHostError, remove_bridge

REPO = Path(__file__).resolve().parent.parent
PINS = REPO / "packaging" / "pins"
DEFAULT_VERSION = (PINS / "DEFAULT").read_text().strip()
REVISION = (REPO / "packaging" / "REVISION").read_text().strip()
PIP_VENV = "/tmp/pip-venv"
UNIT_TIER = REPO / "test" / "unit"
# Kinds of clean root a test host starts from (script/make-hostroot): systemd
# installed but not running (the default, as on most containers and CI
# runners), or no systemd at all.
HOST_KINDS = ("systemd", "nosystemd")
HOST_ROOT_TIMEOUT = 1800


class SigtermAsCtrlC:
    """SIGTERM stops the run as Ctrl-C does, so pytest runs every teardown (hosts, netns, salt-masters).

    Python's default for SIGTERM is to die at once and leave all of them
    behind. A second SIGTERM while tearing down is ignored, as it would cut
    the teardown short (a second Ctrl-C still does).
    """

    def __init__(self) -> None:
        self.stopping = False
        self.previous: signal.Handlers | object = signal.SIG_DFL

    def install(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self)

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)

    def __call__(self, signum: int, _frame) -> None:
        if self.stopping:
            print("\nSIGTERM: already stopping, tearing down", file=sys.stderr)
            return
        self.stopping = True
        raise KeyboardInterrupt("stopped by SIGTERM")


_sigterm_as_ctrl_c = SigtermAsCtrlC()


def pytest_configure(config: pytest.Config) -> None:
    _sigterm_as_ctrl_c.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    _sigterm_as_ctrl_c.uninstall()


def build_deb(version: str) -> Path:
    """Build (or reuse) the deb for a pinned devpi-server version; returns its path."""
    completed = subprocess.run(
        [str(REPO / "packaging" / "build-deb"), version], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        pytest.fail(f"build-deb {version} failed:\n{completed.stdout[-5000:]}\n{completed.stderr[-5000:]}")
    match = re.search(r"(\S+\.deb)", completed.stdout.strip().splitlines()[-1])
    assert match, completed.stdout
    return Path(match.group(1))


def known_versions() -> list[str]:
    return sorted((p.stem for p in PINS.glob("*.txt")), key=lambda v: tuple(int(x) for x in v.split(".")))


@functools.cache
def host_root(kind: str = "systemd") -> Path:
    """The clean Debian 12 root test hosts of ``kind`` start from: made once by script/make-hostroot, then reused.

    Works without pytest too (test/bench). An interrupted build is stopped
    with all its processes; a later call starts it afresh.
    """
    if kind not in HOST_KINDS:
        raise ValueError(f"host kind {kind!r}: one of {', '.join(HOST_KINDS)}")
    builder = subprocess.Popen(
        [str(REPO / "script" / "make-hostroot"), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: mmdebstrap and apt go with it
    )
    try:
        stdout, stderr = builder.communicate(timeout=HOST_ROOT_TIMEOUT)
    except BaseException:
        os.killpg(builder.pid, signal.SIGTERM)
        try:
            builder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(builder.pid, signal.SIGKILL)
            builder.wait()
        raise
    if builder.returncode != 0:
        raise TestHostError(f"script/make-hostroot {kind} failed:\n{stdout[-5000:]}\n{stderr[-5000:]}")
    return Path(stdout.strip().splitlines()[-1])


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
    """Multi-host tests share a bridge; the machine has it only during the session."""
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
    """A flat apt repository of both debs (see aptrepo.py); hosts use it through ``use_apt_repo``."""
    # One per test run (SENTRY_TEST_PREFIX): runs sharing build/ do not remake each other's.
    directory = REPO / "build" / ("apt-" + NAME_PREFIX if NAME_PREFIX else "apt")
    return make_apt_repo(directory, [sentry_deb, old_sentry_deb])


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Salt-factories' own files (generated scripts) in pytest's temporary folders, not loose in /tmp."""
    return {"root_dir": tmp_path_factory.mktemp("salt-factories"), "slow_stop": False}


def shared_with_hosts() -> tuple[str, ...]:
    """This repository, and where its venv and build dir really lie when they are links (a git worktree's)."""
    linked = [str(path.resolve()) for path in (REPO / ".venv", REPO / "build") if path.is_symlink()]
    return (str(REPO), *linked)


def new_host(name: str, *, kind: str = "systemd", **kwargs) -> TestHost:
    """A test host on a clean root of ``kind`` (see ``HOST_KINDS``) that also sees this repository.

    The repository brings the tooling venv and the built debs, wherever it lies.
    """
    return TestHost(name, root=host_root(kind), shared=shared_with_hosts(), **kwargs)


def install_deb(host: TestHost, deb: Path) -> None:
    shutil.copy(deb, host.path("/tmp") / deb.name)
    host.run(["dpkg", "-i", f"/tmp/{deb.name}"])


def host_name(request: pytest.FixtureRequest) -> str:
    """A host name after the test's own name."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:20].strip("-")


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


class HostServer:
    """A sentry-server process inside a test host, on loopback; as ``user`` when given (else root)."""

    def __init__(self, host: TestHost, serverdir: str, port: int, *extra: str, user: str | None = None) -> None:
        self.host, self.serverdir, self.port, self.extra, self.user = host, serverdir, port, extra, user
        self.url = f"http://127.0.0.1:{port}"
        self.log = f"/tmp/sentry-server-{port}.log"
        self.pid: int | None = None

    def start(self) -> HostServer:
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []
        server = ["sentry-server", "--serverdir", self.serverdir, "--port", str(self.port), "--offline-mode"]
        command = shlex.join([*as_user, *server, *self.extra])
        started = self.host.sh(f"setsid {command} >{self.log} 2>&1 </dev/null & echo $!")
        self.pid = int(started.stdout.strip())
        try:
            self.host.wait_for(f"curl -fsS -o /dev/null {self.url}/+api", timeout=60)
        except Exception:
            print(self.host.path(self.log).read_text(errors="replace"))
            raise
        return self

    def stop(self) -> None:
        if self.pid:
            self.host.run(["kill", str(self.pid)], check=False)
            self.host.wait_for(f"! kill -0 {self.pid} 2>/dev/null", timeout=30)
            self.pid = None

    def get_json(self, path: str) -> dict:
        fetched = self.host.run(["curl", "-fsS", "-H", "Accept: application/json", f"{self.url}{path}"])
        return json.loads(fetched.stdout)


def sentry_client(host: TestHost, *args: str, password: str | None = None, check: bool = True):
    """Run the sentry client inside ``host``; a password goes through stdin only."""
    argv = ["sentry", *args]
    if password is not None:
        argv.append("--password-stdin")
    return host.run(
        argv,
        input=None if password is None else password + "\n",
        check=check,
        env={"DEVPI_CLIENTDIR": "/tmp/sentry-client"},
    )


def upload_as_root(host: TestHost, url: str, password: str, wheel: Path, index: str, bases: str) -> None:
    """The seed's first client steps inside ``host``: log in as root, make ``index`` (root's), upload ``wheel``."""
    shutil.copy(wheel, host.path("/tmp") / wheel.name)
    sentry_client(host, "use", url)
    sentry_client(host, "login", "root", password=password)
    sentry_client(host, "index", "-c", index, f"bases={bases}")
    sentry_client(host, "use", f"root/{index}")
    sentry_client(host, "upload", f"/tmp/{wheel.name}")


def pip_install(host: TestHost, index_url: str, requirement: str, target: str, *more: str, check: bool = True):
    """pip install from sentry alone: no local config, no cache, no find-links.

    ``more``: further requirements or pip options (``--report FILE``); with
    ``check=False`` a failed install is returned instead of raised.
    pip ignores a plain-http index other than localhost unless it is a trusted host.
    """
    host.sh(f"test -x {PIP_VENV}/bin/pip || /usr/bin/python3 -m venv {PIP_VENV}")
    return host.run(
        [
            f"{PIP_VENV}/bin/pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--trusted-host",
            urllib.parse.urlsplit(index_url).netloc,
            "--index-url",
            index_url,
            "--target",
            target,
            requirement,
            *more,
        ],
        env={"PIP_CONFIG_FILE": "/dev/null"},
        check=check,
    )


class MasterlessSalt:
    """salt-call --local inside a test host, with the repo as file_roots and a test pillar."""

    CONF = "/etc/salt-test"

    def __init__(self, host: TestHost, pillar: dict | None = None, extra_file_roots: tuple[str, ...] = ()) -> None:
        self.host = host
        conf = host.path(self.CONF)
        (conf / "pillar").mkdir(parents=True, exist_ok=True)
        (conf / "minion").write_text(
            yaml.safe_dump(
                {
                    "id": host.name,
                    "file_client": "local",
                    "root_dir": f"{self.CONF}/root",
                    "file_roots": {"base": [str(REPO), *extra_file_roots]},
                    "pillar_roots": {"base": [f"{self.CONF}/pillar"]},
                    "log_level_logfile": "debug",
                }
            )
        )
        (conf / "pillar" / "top.sls").write_text("base:\n  '*':\n    - test\n")
        self.set_pillar(pillar or {})
        self.call("saltutil.sync_all")

    def forget_file_lists(self) -> None:
        """Salt caches the state tree's file list for a while: after adding files, drop it."""
        shutil.rmtree(self.host.path(f"{self.CONF}/root/var/cache/salt/minion/file_lists"), ignore_errors=True)

    def changed_files(self) -> str:
        """Files changed under /etc, /var/lib, /opt, /var/log since this minion was set up (Salt's own aside)."""
        return self.host.run(
            [
                "find",
                "/etc",
                "/var/lib",
                "/opt",
                "/var/log",
                "-path",
                self.CONF,
                "-prune",
                "-o",
                "-newer",
                f"{self.CONF}/minion",
                "-print",
            ]
        ).stdout

    def set_pillar(self, pillar: dict) -> None:
        self.host.path(f"{self.CONF}/pillar/test.sls").write_text(yaml.safe_dump(pillar))
        # A readable copy for tests that change one part of the pillar.
        self.host.path(f"{self.CONF}/pillar/test.json").write_text(json.dumps(pillar))

    def call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.host.run(
            [str(REPO / ".venv" / "bin" / "salt-call"), "-c", self.CONF, "--local", "--out=json", *args],
            check=check,
            timeout=900,
        )

    def apply(self, sls: str = "sentry", *args: str) -> StateRun:
        completed = self.call("state.apply", sls, "--retcode-passthrough", *args, check=False)
        return StateRun(completed)


class StateRun:
    """The outcome of one state.apply: per-state results, or the render error."""

    def __init__(self, completed: subprocess.CompletedProcess) -> None:
        self.returncode = completed.returncode
        self.stdout, self.stderr = completed.stdout, completed.stderr
        try:
            self.returned = json.loads(completed.stdout)["local"]
        except (ValueError, KeyError):
            self.returned = None

    @property
    def states(self) -> dict:
        return self.returned if isinstance(self.returned, dict) else {}

    @property
    def errors(self) -> str:
        """Render errors as one text (salt returns them as a list of strings)."""
        if isinstance(self.returned, list):
            return "\n".join(self.returned)
        return self.stdout + self.stderr

    def by_id(self, state_id: str) -> dict:
        (found,) = [result for key, result in self.states.items() if key.split("_|-")[1] == state_id]
        return found

    @property
    def changed(self) -> dict[str, dict]:
        return {key.split("_|-")[1]: result["changes"] for key, result in self.states.items() if result["changes"]}

    @property
    def failed(self) -> dict[str, str]:
        return {key: result["comment"] for key, result in self.states.items() if result["result"] is False}

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and bool(self.states) and not self.failed
