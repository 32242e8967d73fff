"""A sentry-server process inside a test host, started and stopped by the test itself."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable

from support.hosts import TestHost


def wait_for_step(host: TestHost, trail: str, step: str, timeout: float = 300) -> None:
    """Until the operation's trail (``<serverdir>.operation.json`` in ``host``) names ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(host.path(trail).read_text()).get("step") == step:
                return
        except (FileNotFoundError, ValueError):
            pass  # not begun yet, or being rewritten
        time.sleep(0.05)
    raise AssertionError(f"the upgrade never reached step {step!r} within {timeout}s")


def devpi_profile(
    host: TestHost, file_name: str, server_port: int, port: int, edit: Callable[[str], str] = lambda site: site
) -> None:
    """An nginx site as devpi-gen-config writes it (``file_name``: nginx-devpi.conf, nginx-devpi-caching.conf) for
    the deployed server, on ``port`` and changed by ``edit``, enabled in ``host``'s nginx: the benchmarks' anchor."""
    host.sh(
        "rm -rf /tmp/devpi-gen && mkdir /tmp/devpi-gen && cd /tmp/devpi-gen && LOGNAME=sentry "
        f"/opt/virtualenvs/sentry/bin/devpi-gen-config --serverdir /var/lib/sentry/data --port {server_port} "
        ">/dev/null"
    )
    site = host.path(f"/tmp/devpi-gen/gen-config/{file_name}").read_text()
    site = edit(re.sub(r"listen \d+;", f"listen {port};", site))
    host.path("/etc/nginx/sites-enabled/devpi-profile.conf").write_text(site)
    host.sh("nginx -t -q && nginx -s reload")


def rewrite_uuid(host: TestHost, nodeinfo: str, uuid: str) -> None:
    """Give the serverdir whose ``.nodeinfo`` is at ``nodeinfo`` (in ``host``) another uuid, in place."""
    rewrite = (
        "import json, sys; path = sys.argv[1]; info = json.load(open(path)); info['uuid'] = sys.argv[2]; "
        "open(path, 'w').write(json.dumps(info))"
    )
    host.run(["/usr/bin/python3", "-c", rewrite, nodeinfo, uuid])


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
