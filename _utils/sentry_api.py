"""The one client of the server's HTTP API (devpi's JSON API), for sentry's modules and states.

Reached as ``__utils__["sentry_api.request"]`` and friends. Bodies are never
logged: they may carry passwords. A server that does not answer raises
CommandExecutionError saying so.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import salt.utils.data
from salt.exceptions import CommandExecutionError

HTTP_TIMEOUT = 30


def request(
    method: str,
    url: str,
    body: dict | None = None,
    auth: str | None = None,
    timeout: float = HTTP_TIMEOUT,
    ca_file: str = "",
) -> tuple[int, dict]:
    """One JSON request; returns (status, decoded body). An https URL is checked against ``ca_file``
    (the instance's, from sentry:mirror), else the host's CA store."""
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if auth:
        headers["X-Devpi-Auth"] = auth
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) URL
    context = ssl.create_default_context(cafile=ca_file) if ca_file and url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"message": exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        raise CommandExecutionError(f"sentry at {url} does not answer: {exc}; is the server running?") from None


def check(code: int, body: dict, what: str, ok: tuple[int, ...] = (200, 201)) -> dict:
    """The ``result`` of an answer, or CommandExecutionError naming ``what`` failed and why."""
    if code not in ok:
        raise CommandExecutionError(f"{what} failed ({code}): {body.get('message', body)}")
    return body.get("result", {})


def get(url: str, what: str) -> dict:
    """The ``result`` of GET ``url``; raises unless it answers 200."""
    return check(*request("GET", url), what, ok=(200,))


def root_password(given: str | None, pillar) -> str:
    """Root's password: ``given``, else pillar ``sentry:server:root_password``; raises when neither has one."""
    password = given or salt.utils.data.traverse_dict_and_list(pillar, "sentry:server:root_password", "")
    if not password:
        raise CommandExecutionError("no root password: set pillar sentry:server:root_password or pass root_password")
    return password


def login(base: str, user: str, password: str) -> str:
    """Log in; returns the X-Devpi-Auth header value (the token never leaves the caller)."""
    code, body = request("POST", f"{base}/+login", {"user": user, "password": password})
    if code != 200:
        raise CommandExecutionError(f"login as {user} at {base} failed ({code}): {body.get('message', body)}")
    token = body["result"]["password"]
    return base64.b64encode(f"{user}:{token}".encode()).decode()


def server_version(base: str) -> str | None:
    """The devpi-server version answering at ``base`` (its X-Devpi-Server-Version), None when none answers."""
    req = urllib.request.Request(f"{base}/+api", headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            return response.headers.get("X-Devpi-Server-Version")
    except (urllib.error.URLError, OSError):
        return None


def describe_status(base: str, result: dict) -> dict:
    """What /+status's ``result`` says: role, serial, uuid; on a replica its master and lag."""
    role = result.get("role", "").lower()
    info = {
        "up": True,
        "url": base,
        "role": "replica" if role == "replica" else "master",
        "serial": result.get("serial"),
        "uuid": result.get("uuid"),
        "serverdir": result.get("serverdir"),
    }
    if info["role"] == "replica":
        primary_serial = result.get("primary-serial", result.get("master-serial"))
        info.update(
            {
                "master_url": result.get("primary-url", result.get("master-url")),
                "master_uuid": result.get("primary-uuid", result.get("master-uuid")),
                "master_serial": primary_serial,
                "lag": None if primary_serial is None else primary_serial - result.get("serial", 0),
                "in_sync_at": result.get("replica-in-sync-at"),
                "replication_errors": result.get("replication-errors", {}),
            }
        )
        if "replica-files-in-sync-at" in result:  # newer servers: when no release file was left to fetch
            info["files_in_sync_at"] = result["replica-files-in-sync-at"]
    return info


def status(base: str) -> dict:
    """describe_status() of the server at ``base``; raises when it does not answer or answers an error."""
    return describe_status(base, get(f"{base}/+status", f"GET {base}/+status"))


def master_status(master_url: str, ca_file: str = "") -> dict:
    """The master's raw /+status result as its replicas see it (through its nginx, trusting ``ca_file``)."""
    code, body = request("GET", f"{master_url.rstrip('/')}/+status", ca_file=ca_file)
    if code != 200:
        raise CommandExecutionError(f"the master at {master_url} answered {code} to /+status")
    return body["result"]


def follows(replica: dict, master: dict) -> bool:
    """Whether ``replica`` (status()) follows this very ``master`` (master_status()) and has all it has."""
    return (
        replica.get("master_uuid") == master.get("uuid")
        and isinstance(replica.get("serial"), int)
        and replica["serial"] >= master.get("serial", 0)
    )


def wait_follows(status: Callable[[], dict], master: dict, master_url: str, timeout: float) -> dict:
    """Poll ``status()`` (the replica's describe_status, ``up`` False when it does not answer) until the
    replica follows ``master`` (master_status() when the wait began) and holds every release file too,
    where the server tells (its file queue empty since); returns that status, raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    caught_up_at = None
    while True:
        current = status()
        if current["up"] and follows(current, master):
            caught_up_at = caught_up_at or time.time()
            if "files_in_sync_at" not in current or (current["files_in_sync_at"] or 0) >= caught_up_at:
                return current
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"the replica did not catch up with {master_url} (serial {master.get('serial')}, "
                f"uuid {master.get('uuid')}) within {timeout}s; it is at {current}"
            )
        time.sleep(0.5)
