"""Clients of sentry inside a test host: the sentry client, and pip installing from sentry alone."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from support.hosts import TestHost, TestHostError
from support.paths import REPO
from support.wheels import make_wheel

PIP_VENV = "/tmp/pip-venv"  # made in a host whose python3 is not this machine's
# A venv with pip made once on this machine (python3 -m venv: ~7 s of CPU each time), which hosts whose
# python3 is this machine's minor release use as it is: they see this repository at the same path.
SHARED_PIP_VENV = REPO / "build" / f"pip-venv-py{sys.version_info.major}.{sys.version_info.minor}"


def _shared_pip_venv() -> Path:
    """SHARED_PIP_VENV, made by this machine's /usr/bin/python3 the first time (runs side by side take turns;
    one that finds it half made, after a run was killed, makes it again)."""
    made = SHARED_PIP_VENV / ".made"
    if made.exists():
        return SHARED_PIP_VENV
    SHARED_PIP_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{SHARED_PIP_VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            shutil.rmtree(SHARED_PIP_VENV, ignore_errors=True)
            subprocess.run(["/usr/bin/python3", "-m", "venv", str(SHARED_PIP_VENV)], check=True)
            made.touch()
    return SHARED_PIP_VENV


def pip_of(host: TestHost) -> str:
    """pip inside ``host``: the shared venv's where the host's python3 is this machine's, else a venv of its own."""
    machine_python = os.path.realpath("/usr/bin/python3").rsplit("/", 1)[-1]  # python3.11
    host_python = os.readlink(host.path("/usr/bin/python3")).rsplit("/", 1)[-1]  # Debian's link: python3.X
    if machine_python == host_python and machine_python == f"python{sys.version_info.major}.{sys.version_info.minor}":
        return str(_shared_pip_venv() / "bin" / "pip")
    host.sh(f"test -x {PIP_VENV}/bin/pip || /usr/bin/python3 -m venv {PIP_VENV}")
    return f"{PIP_VENV}/bin/pip"


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


def log_in(host: TestHost, url: str, user: str, password: str) -> tuple[int, dict]:
    """POST ``url``/+login from ``host``, the password on curl's stdin (never its argv): status and JSON body."""
    answered = host.run(
        [
            "curl",
            "-sS",
            "-o",
            "/tmp/login-answer",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json",
            "--data-binary",
            "@-",
            f"{url.rstrip('/')}/+login",
        ],
        input=json.dumps({"user": user, "password": password}),
    )
    body = host.path("/tmp/login-answer").read_text()
    return int(answered.stdout), json.loads(body) if body.startswith("{") else {}


def login_status(host: TestHost, url: str, user: str, password: str) -> int:
    """The HTTP status of a login from ``host`` (see ``log_in``)."""
    return log_in(host, url, user, password)[0]


def login_token(host: TestHost, url: str, user: str, password: str) -> str:
    """The token of a login from ``host`` (see ``log_in``), or TestHostError when refused."""
    status, body = log_in(host, url, user, password)
    if status != 200:
        raise TestHostError(f"login as {user} at {url} answered {status}: {body.get('message', body)}")
    return body["result"]["password"]


def upload_as_root(host: TestHost, url: str, password: str, wheel: Path, index: str, bases: str) -> None:
    """The seed's first client steps inside ``host``: log in as root, make ``index`` (root's), upload ``wheel``."""
    shutil.copy(wheel, host.path("/tmp") / wheel.name)
    sentry_client(host, "use", url)
    sentry_client(host, "login", "root", password=password)
    sentry_client(host, "index", "-c", index, f"bases={bases}")
    sentry_client(host, "use", f"root/{index}")
    sentry_client(host, "upload", f"/tmp/{wheel.name}")


def trusted_host(url: str) -> str:
    """HOST[:PORT] of ``url``, without the user and password it may carry, as pip's --trusted-host wants it."""
    parts = urllib.parse.urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 keeps its brackets
    return host + (f":{parts.port}" if parts.port else "")


def pip_install(host: TestHost, index_url: str, requirement: str, target: str, *more: str, check: bool = True):
    """pip install from sentry alone: no local config, no cache, no find-links.

    ``more``: further requirements or pip options (``--report FILE``); with
    ``check=False`` a failed install is returned instead of raised.
    pip ignores a plain-http index other than localhost unless it is a trusted host.
    """
    return host.run(
        [
            pip_of(host),
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--trusted-host",
            trusted_host(index_url),
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


def upload_generated(
    host: TestHost, files: int, indexes: tuple[str, ...], versions_per_project: int, user: str, password: str
) -> float:
    """``files`` generated wheels spread over ``indexes`` as ``user``, ``versions_per_project`` versions a
    project, one ``sentry upload`` per index (the benchmarks' data); returns the seconds."""
    started = time.monotonic()
    for position, index in enumerate(indexes):
        inside = f"/tmp/wheels/{index.replace('/', '-')}"
        folder = host.path(inside)
        folder.mkdir(parents=True)
        for number in range(position, files, len(indexes)):
            project = f"bench-probe-{number // (versions_per_project * len(indexes))}"
            make_wheel(folder, project, f"1.{number}", payload=str(number) * 40)
        sentry_client(host, "use", f"http://127.0.0.1:3141/{index}")
        sentry_client(host, "login", user, password=password)
        host.sh(f"cd {inside} && DEVPI_CLIENTDIR=/tmp/sentry-client sentry upload --from-dir .", timeout=3600)
    return time.monotonic() - started


def write_window(writes: list[tuple[float, str, bool]]) -> float:
    """Seconds from the first refused write to the first one acknowledged after the last refusal (0.0 when
    none was refused), from ``writes``: (time, what, acknowledged) in the order they were made.

    Writes that never come back make no window: that fails here, naming the last refusal.
    """
    refused = [at for at, _, ok in writes if not ok]
    if not refused:
        return 0.0
    after = [at for at, _, ok in writes if ok and at > refused[-1]]
    assert after, (
        f"{len(refused)} writes refused, the last {refused[-1] - refused[0]:.1f}s after the first, "
        "and none acknowledged after it: writes never came back"
    )
    return after[0] - refused[0]
