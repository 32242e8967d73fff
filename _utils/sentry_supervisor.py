"""supervisord's XML-RPC API on its unix socket, for sentry_program and the sentry_* modules.

No supervisorctl processes and no parsing of their output. Reached from the
modules as ``__utils__["sentry_supervisor.connect"]`` and friends.
"""

from __future__ import annotations

import http.client
import socket
import time
import xmlrpc.client
from collections.abc import Callable

from salt.exceptions import CommandExecutionError

DEFAULT_SOCKET = "/var/run/supervisor.sock"
BAD_NAME = 10  # supervisor's fault code for an unknown program
NOT_RUNNING = 70  # stopProcess on a program that is not running
ALREADY_STARTED = 60
RUNNING_STATES = ("RUNNING", "STARTING", "BACKOFF")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path, self._timeout = path, timeout

    def make_connection(self, host):
        return _UnixConnection(self._path, self._timeout)


def connect(path: str = DEFAULT_SOCKET, wait: float = 30, timeout: float = 90):
    """The ``supervisor`` namespace of the API, waiting up to ``wait`` s for the socket to answer.

    Raises RuntimeError when it does not (its socket appears a moment after the init script returns).
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            api = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(path, timeout)).supervisor
            api.getPID()
            return api
        except (OSError, xmlrpc.client.Error) as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"supervisord does not answer on {path}: {exc}") from None
            time.sleep(0.3)


def state(api, name: str) -> str:
    """The program's state name (RUNNING, STOPPED, ...), or ABSENT when supervisor does not know it."""
    try:
        return api.getProcessInfo(name)["statename"]
    except xmlrpc.client.Fault as fault:
        if fault.faultCode == BAD_NAME:
            return "ABSENT"
        raise


def is_running(api, name: str) -> bool:
    """Whether ``name`` runs or is on its way to (starting, backing off before a retry)."""
    return state(api, name) in RUNNING_STATES


def stop(api, name: str) -> None:
    """Stop ``name`` and wait until it has exited; nothing to do when it does not run."""
    try:
        api.stopProcess(name, True)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != NOT_RUNNING:
            raise


def start(api, name: str, wait: bool = True) -> None:
    """Start ``name``; with ``wait=False`` return at once instead of after its startsecs."""
    try:
        api.startProcess(name, wait)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != ALREADY_STARTED:
            raise


def tail(api, name: str, length: int = 2000) -> str:
    """The end of the program's output, or '' when there is none."""
    try:
        return api.tailProcessStdoutLog(name, 0, length)[0]
    except xmlrpc.client.Fault:
        return ""


def wait_until_answers(api, name: str, answer: Callable[[], dict], timeout: float) -> dict:
    """What ``answer()`` returns once it stops raising CommandExecutionError; raises after ``timeout``
    seconds, or at once with the program's last output when ``name`` has died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return answer()
        except CommandExecutionError as exc:
            current = state(api, name)
            if current in ("FATAL", "EXITED", "STOPPED", "ABSENT"):
                output = tail(api, name).strip()[-1000:]
                raise CommandExecutionError(f"{name} is {current}; its last output:\n{output}") from None
            if time.monotonic() > deadline:
                raise CommandExecutionError(f"{name} did not answer within {timeout}s: {exc}") from None
        time.sleep(0.2)


def wait_until_running(api, name: str, timeout: float) -> None:
    """Wait until supervisor calls ``name`` RUNNING (past its startsecs); raises when it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (current := state(api, name)) != "RUNNING":
        if current not in RUNNING_STATES or time.monotonic() > deadline:
            raise CommandExecutionError(f"{name} is {current}, not RUNNING (waited up to {timeout}s)")
        time.sleep(0.2)
