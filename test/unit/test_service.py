"""sentry_service (module and state) with Salt's loader mocks: which init does the work, and when.

No root, no host: the init scripts and Salt's own service module are replaced
by recorders. The hosts where the formula really starts supervisor and nginx
this way are in test_deploy and test_formula.
"""

from __future__ import annotations

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

service_module = load("_modules/sentry_service.py", "sentry_service_module")
service_state = load("_states/sentry_service.py", "sentry_service_state")


class Host:
    """What the init scripts and Salt's systemd module would say; records what was run."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.ran: list[list[str]] = []
        self.salt_calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()

    def cmd_run_all(self, argv, **kwargs):
        self.ran.append(list(argv))
        name, action = argv[1], argv[2] if argv[0] == "service" else (None, None)
        if argv[:1] == ["systemctl"]:
            return {"retcode": 0, "stdout": "enabled", "stderr": ""}
        if action in self.fail:
            return {"retcode": 1, "stdout": "", "stderr": f"{name} {action}: it broke"}
        if action == "status":
            return {"retcode": 0 if name in self.running else 3, "stdout": "", "stderr": ""}
        if action in ("start", "restart"):
            self.running.add(name)
        if action == "stop":
            self.running.discard(name)
        return {"retcode": 0, "stdout": "", "stderr": ""}

    def salt_service(self, function):
        def call(name):
            self.salt_calls.append((function, name))
            if function in ("start", "restart"):
                self.running.add(name)
            return function != "status" or name in self.running

        return call


@pytest.fixture
def host():
    return Host()


@pytest.fixture
def booted(tmp_path, monkeypatch):
    """Whether /run/systemd/system exists: a folder the test makes or not."""
    runtime = tmp_path / "systemd"
    monkeypatch.setattr(service_module, "SYSTEMD_RUNTIME", str(runtime))
    init_d = tmp_path / "init.d"
    init_d.mkdir()
    for name in ("nginx", "supervisor"):
        (init_d / name).write_text("#!/bin/sh\n")
        (init_d / name).chmod(0o755)
    monkeypatch.setattr(service_module, "INIT_SCRIPTS", str(init_d))
    monkeypatch.setattr(service_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(service_module, "NGINX_PID", str(tmp_path / "nginx.pid"))  # none: no workers to wait for
    return runtime


@pytest.fixture
def configure_loader_modules(host):
    salt = {
        "cmd.run_all": host.cmd_run_all,
        **{f"service.{f}": host.salt_service(f) for f in ("status", "start", "stop", "restart", "reload", "enabled")},
    }
    module_funcs = {
        "init_system": service_module.init_system,
        "status": service_module.status,
        "start": service_module.start,
        "restart": service_module.restart,
        "reload": service_module.reload_,
        "enabled": service_module.enabled,
        "enable": service_module.enable,
    }
    return {
        service_module: {"__salt__": salt},
        service_state: {
            "__salt__": {f"sentry_service.{k}": v for k, v in module_funcs.items()},
            "__opts__": {"test": False},
            "__context__": {},
        },
    }


def test_without_a_running_systemd_the_init_script_starts_it(host, booted):
    assert service_module.init_system() == "sysv"
    ret = service_state.running("nginx")
    assert ret["result"] is True and ret["changes"] == {"running": {"old": False, "new": True}}
    assert ["service", "nginx", "start"] in host.ran
    assert host.salt_calls == []  # Salt's own service module would only say OFFLINE mode here
    again = service_state.running("nginx")
    assert again["result"] is True and again["changes"] == {}


def test_a_booted_systemd_goes_through_salts_service_module(host, booted):
    booted.mkdir()
    assert service_module.init_system() == "systemd"
    ret = service_state.running("supervisor")
    assert ret["result"] is True
    assert ("start", "supervisor") in host.salt_calls
    assert not [argv for argv in host.ran if argv[:1] == ["service"]]


def test_test_mode_starts_nothing(host, booted):
    service_state.__opts__["test"] = True
    ret = service_state.running("nginx")
    assert ret["result"] is None and "running" in ret["changes"]
    read_only = (["service", "nginx", "status"], ["systemctl", "is-enabled", "nginx"])
    assert [argv for argv in host.ran if argv not in read_only] == []
    assert service_state.mod_watch("nginx", reload=True)["result"] is None
    assert "nginx" not in host.running


def test_a_watch_reloads_a_running_service_and_not_one_this_run_started(host, booted):
    host.running.add("nginx")
    ret = service_state.mod_watch("nginx", sfun="running", reload=True)
    assert ret["changes"] == {"reload": True}
    assert host.ran[-1] == ["service", "nginx", "reload"]

    service_state.running("supervisor")
    ran = len(host.ran)
    ret = service_state.mod_watch("supervisor", sfun="running")
    assert ret["changes"] == {} and len(host.ran) == ran


def test_a_stopped_service_is_started_not_reloaded_on_watch(host, booted):
    ret = service_state.mod_watch("nginx", sfun="running", reload=True)
    assert ret["changes"] == {"restart": True}
    assert "nginx" in host.running


def test_a_failing_init_script_fails_the_state_with_its_output(host, booted):
    host.fail.add("start")
    ret = service_state.running("nginx")
    assert ret["result"] is False
    assert "service nginx start failed" in ret["comment"] and "it broke" in ret["comment"]


def test_no_init_script_and_no_systemd_names_what_is_missing(host, booted):
    with pytest.raises(CommandExecutionError, match=r"no init script .*/apache2"):
        service_module.start("apache2")


def test_an_nginx_reload_returns_once_new_workers_serve(host, booted, monkeypatch):
    workers = iter([{11, 12}, {11, 12}, {11, 21}, {21, 22}])  # before; old ones still serving; then new only
    seen = []
    monkeypatch.setattr(service_module, "_nginx_workers", lambda: seen.append(1) or next(workers))
    assert service_module.reload_("nginx") is True
    assert len(seen) == 4 and host.ran[-1] == ["service", "nginx", "reload"]


def test_an_nginx_reload_that_never_takes_fails_saying_so(host, booted, monkeypatch):
    monkeypatch.setattr(service_module, "_nginx_workers", lambda: {11, 12})
    monkeypatch.setattr(service_module, "RELOAD_WAIT", 0.3)
    with pytest.raises(CommandExecutionError, match="still serve the old configuration"):
        service_module.reload_("nginx")


class SlowToStop(Host):
    """Debian's supervisor script: stop returns while supervisord still runs, and a start then does nothing."""

    def __init__(self, lingers: int) -> None:
        super().__init__()
        self.lingers = lingers  # status checks that still see it after stop returned
        self.stopping = 0

    def cmd_run_all(self, argv, **kwargs):
        name, action = argv[1], argv[2]
        if action == "stop" and name in self.running:
            self.ran.append(list(argv))
            self.stopping = self.lingers
            return {"retcode": 0, "stdout": "", "stderr": ""}
        if action == "status" and self.stopping:
            self.ran.append(list(argv))
            self.stopping -= 1
            if not self.stopping:
                self.running.discard(name)
            return {"retcode": 0, "stdout": "", "stderr": ""}
        if action in ("start", "restart") and self.stopping:
            self.ran.append(list(argv))
            return {"retcode": 0, "stdout": "already running", "stderr": ""}  # and then it exits: none left
        return super().cmd_run_all(argv, **kwargs)


def test_a_restart_without_systemd_starts_only_once_the_old_process_is_gone(booted, monkeypatch):
    slow = SlowToStop(lingers=3)
    slow.running.add("supervisor")
    monkeypatch.setitem(service_module.__salt__, "cmd.run_all", slow.cmd_run_all)
    monkeypatch.setattr(service_module.time, "sleep", lambda _: None)
    assert service_module.restart("supervisor") is True
    actions = [argv[2] for argv in slow.ran]
    assert "restart" not in actions  # the init script's own restart is what leaves none running
    assert actions.index("start") > actions.index("stop") + 3
    assert "supervisor" in slow.running


def test_a_restart_that_never_stops_says_so(booted, monkeypatch):
    slow = SlowToStop(lingers=10**6)
    slow.running.add("supervisor")
    monkeypatch.setitem(service_module.__salt__, "cmd.run_all", slow.cmd_run_all)
    monkeypatch.setattr(service_module, "TIMEOUT", 0)
    with pytest.raises(CommandExecutionError, match="still says it runs"):
        service_module.restart("supervisor")
