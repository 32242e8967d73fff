"""sentry_program's states through Salt's loader, against a real supervisord of the test's own.

Loader-level: no minion, no host; supervisord runs on a socket in the test's
temporary folder with a program that sleeps.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import salt.config
from saltfactories.utils.functional import Loaders
from support.paths import REPO

SUPERVISORD_CONF = """\
[unix_http_server]
file={dir}/supervisor.sock
chmod=0700

[supervisord]
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[include]
files = {dir}/conf.d/*.conf
"""

PROGRAM = """\
[program:sleeper]
command = /bin/sleep {seconds}
startsecs = 1
"""


@pytest.fixture(scope="module")
def supervisor_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("supervisor")
    (folder / "conf.d").mkdir()
    (folder / "supervisord.conf").write_text(SUPERVISORD_CONF.format(dir=folder))
    daemon = subprocess.Popen(["/usr/bin/supervisord", "-c", str(folder / "supervisord.conf")])
    deadline = time.monotonic() + 20
    while not (folder / "supervisor.sock").exists():
        assert time.monotonic() < deadline, "supervisord did not start"
        time.sleep(0.1)
    yield folder
    daemon.terminate()
    daemon.wait(timeout=30)


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    opts = salt.config.minion_config(None)
    root = tmp_path_factory.mktemp("loader-minion")
    opts.update(
        {
            "root_dir": str(root),
            "cachedir": str(root / "cache"),
            "file_client": "local",
            "states_dirs": [str(REPO / "_states")],
            "module_dirs": [str(REPO / "_modules")],
            "utils_dirs": [str(REPO / "_utils")],
        }
    )
    return Loaders(opts)


@pytest.fixture(autouse=True)
def fresh_context(loaders):
    yield
    loaders.reset_state()


def write_program(folder: Path, seconds: int) -> None:
    """Write the program file as file.managed does: only a new content."""
    conf, content = folder / "conf.d" / "sleeper.conf", PROGRAM.format(seconds=seconds)
    if not conf.exists() or conf.read_text() != content:
        conf.write_text(content)


def pid(folder: Path) -> str:
    sock = f"unix://{folder}/supervisor.sock"
    return subprocess.run(
        ["supervisorctl", "-s", sock, "pid", "sleeper"], check=False, capture_output=True, text=True
    ).stdout


def running(loaders, folder: Path, **kwargs):
    kwargs.setdefault("ready_timeout", 20)
    return loaders.states.sentry_program.running(
        name="sleeper",
        conf_file=str(folder / "conf.d" / "sleeper.conf"),
        socket_path=str(folder / "supervisor.sock"),
        **kwargs,
    )


def loaded_command(loaders, folder: Path) -> str:
    """The command supervisor has read for the program (what reloadConfig would replace)."""
    api = loaders.utils["sentry_supervisor.connect"](str(folder / "supervisor.sock"))
    (config,) = [c for c in api.getAllConfigInfo() if c["name"] == "sleeper"]
    return config["command"]


def test_a_new_program_is_added_and_started_then_left_alone(loaders, supervisor_dir):
    write_program(supervisor_dir, 1000)
    first = running(loaders, supervisor_dir)
    assert first.result is True
    assert first.changes == {"config": "added", "state": {"old": "ABSENT", "new": "RUNNING"}}
    started = pid(supervisor_dir)
    assert started.strip().isdigit()
    again = running(loaders, supervisor_dir)
    assert again.result is True and again.changes == {}
    assert pid(supervisor_dir) == started


def test_test_mode_plans_a_changed_file_and_touches_nothing(loaders, supervisor_dir):
    write_program(supervisor_dir, 1000)
    assert running(loaders, supervisor_dir).result is True
    before = pid(supervisor_dir)
    assert running(loaders, supervisor_dir, test=True).changes == {}
    time.sleep(1.1)  # supervisor tells start times in whole seconds
    write_program(supervisor_dir, 2000)
    planned = running(loaders, supervisor_dir, test=True)
    assert planned.result is None
    assert planned.changes == {"config": "changed"}
    assert pid(supervisor_dir) == before
    assert loaded_command(loaders, supervisor_dir) == "/bin/sleep 1000"  # supervisor has not re-read its files


def test_a_changed_file_restarts_the_program_once(loaders, supervisor_dir):
    write_program(supervisor_dir, 3000)
    before = pid(supervisor_dir)
    changed = running(loaders, supervisor_dir)
    assert changed.result is True and changed.changes["config"] == "changed"
    after = pid(supervisor_dir).strip()
    assert after != before.strip()
    # The program's own new process runs the new command (not any "3000" on the machine, where shards run too).
    assert Path(f"/proc/{after}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sleep", b"3000"]
    assert loaded_command(loaders, supervisor_dir) == "/bin/sleep 3000"


def test_a_program_that_never_gets_ready_fails_with_its_output(loaders, supervisor_dir):
    write_program(supervisor_dir, 4000)
    failed = running(loaders, supervisor_dir, ready_url="http://127.0.0.1:9/", ready_timeout=2)
    assert failed.result is False
    assert "sleeper is RUNNING, not ready within 2" in failed.comment


def test_absent_stops_and_forgets_the_program(loaders, supervisor_dir):
    conf = supervisor_dir / "conf.d" / "sleeper.conf"
    gone = loaders.states.sentry_program.absent(
        name="sleeper", conf_file=str(conf), socket_path=str(supervisor_dir / "supervisor.sock")
    )
    assert gone.result is True and gone.changes["state"]["new"] == "ABSENT"
    assert not conf.exists()
    again = loaders.states.sentry_program.absent(
        name="sleeper", conf_file=str(conf), socket_path=str(supervisor_dir / "supervisor.sock")
    )
    assert again.result is True and again.changes == {}


def test_without_supervisor_test_mode_plans_and_real_mode_fails(loaders, tmp_path):
    missing, conf_file = str(tmp_path / "no.sock"), str(tmp_path / "sleeper.conf")
    planned = loaders.states.sentry_program.running(name="sleeper", conf_file=conf_file, socket_path=missing, test=True)
    assert planned.result is None
    failed = loaders.states.sentry_program.running(
        name="sleeper", conf_file=conf_file, socket_path=missing, ready_timeout=1
    )
    assert failed.result is False and "supervisord does not answer" in failed.comment
