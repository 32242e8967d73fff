"""The clean roots test hosts start from (script/make-hostroot), and ``new_host`` on one of them."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from support.booted import BootedHost
from support.hosts import TestHost, TestHostError
from support.paths import HOST_RELEASE, RELEASES, REPO
from support.timing import step

# Kinds of clean root a test host starts from (script/make-hostroot): systemd
# installed but not running (the default, as on most containers and CI
# runners), or no systemd at all.
HOST_KINDS = ("systemd", "nosystemd")
HOST_ROOT_TIMEOUT = 1800


@functools.cache
def host_root(kind: str = "systemd", release: str = HOST_RELEASE) -> Path:
    """The clean Debian root (``release``: bookworm, trixie) test hosts of ``kind`` start from: made once by
    script/make-hostroot, then reused.

    Works without pytest too (test/bench). An interrupted build is stopped
    with all its processes; a later call starts it afresh.
    """
    if kind not in HOST_KINDS:
        raise ValueError(f"host kind {kind!r}: one of {', '.join(HOST_KINDS)}")
    if release not in RELEASES:
        raise ValueError(f"Debian release {release!r}: one of {', '.join(RELEASES)}")
    with step("host root build"):
        return _make_host_root(kind, release)


def _make_host_root(kind: str, release: str) -> Path:
    builder = subprocess.Popen(
        [str(REPO / "script" / "make-hostroot"), kind, release],
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
        raise TestHostError(f"script/make-hostroot {kind} {release} failed:\n{stdout[-5000:]}\n{stderr[-5000:]}")
    return Path(stdout.strip().splitlines()[-1])


def shared_with_hosts() -> tuple[str, ...]:
    """This repository, and where its venv and build dir really lie when they are links (a git worktree's)."""
    linked = [str(path.resolve()) for path in (REPO / ".venv", REPO / "build") if path.is_symlink()]
    return (str(REPO), *linked)


def python_home(venv: Path) -> str | None:
    """Where the Python a venv was made with lies, when it is not the host's own (/usr): pyenv's, say."""
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            prefix = Path(value.strip()).parent
            return None if prefix == Path("/usr") else str(prefix)
    return None


def new_host(
    name: str,
    *,
    kind: str = "systemd",
    release: str = HOST_RELEASE,
    also_shared: tuple[str, ...] = (),
    **kwargs,
) -> TestHost:
    """A test host on a clean root of ``kind`` (see ``HOST_KINDS``; or ``booted``: systemd-nspawn booting the
    systemd kind's root, support/booted.py) and Debian ``release`` that also sees this repository.

    The repository brings the tooling venv and the built debs, wherever it lies.
    ``also_shared``: more of this machine's directories the host sees (a minion venv's own Python).
    """
    shared = (*shared_with_hosts(), *also_shared)
    if kind == "booted":  # systemd as PID 1 (support/booted.py), on the root of the systemd kind
        return BootedHost(name, root=host_root("systemd", release), shared=shared, **kwargs)
    return TestHost(name, root=host_root(kind, release), shared=shared, **kwargs)


def host_name(request: pytest.FixtureRequest) -> str:
    """A host name after the test's own name."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:20].strip("-")
