"""Failed credentials, counted per client address: an address that fails too often is refused for a while.

Every wrong password costs the server a password hash and gives its sender a
guess. nginx limits how fast an address may send credentials (the formula's
sentry:nginx:limits), but cannot tell a good password from a wrong one; the
server can. An address with ``limit`` failed checks within ``window`` seconds
is refused for ``ban`` seconds, before any check: 429 with Retry-After
(401 with Retry-After to nginx's /+authcheck, whose answers nginx reads as
401/403 or error). IPv6 clients count per /64, the block one host usually
holds.

The formula sets it in the server's environment, read once at start:
``SENTRY_FAILED_CREDENTIALS="LIMIT/WINDOW/BAN"`` (seconds; unset or a limit
of 0: nothing is counted). nginx in front (a loopback peer, the only one
whose headers are taken) names the client in X-Real-IP and says
``X-Sentry-Uncounted: 1`` for the addresses it exempts; loopback clients are
never counted.
"""

from __future__ import annotations

import ipaddress
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

ADDRESSES_KEPT = 65536  # addresses with failures (or bans) remembered at most; the oldest go first
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class FailedCredentials:
    """Failures per client address in a sliding window, and the addresses refused for now. Thread-safe."""

    def __init__(
        self,
        limit: int,
        window: float,
        ban: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.ban, self.clock = limit, window, ban, clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._banned: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, address: str) -> str | None:
        """What ``address`` is counted as (itself, an IPv6 /64), or None: never counted."""
        try:
            ip: Address = ipaddress.ip_address(address.strip())
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return None
        if ip.version == 6:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def refused_for(self, key: str) -> int:
        """Whole seconds ``key`` stays refused; 0: not refused."""
        with self._lock:
            until = self._banned.get(key)
            if until is None:
                return 0
            left = until - self.clock()
            if left <= 0:
                del self._banned[key]
                return 0
            return math.ceil(left)

    def failed(self, key: str) -> bool:
        """Count a failure of ``key``; True when it is refused from now on."""
        with self._lock:
            now = self.clock()
            recent = [at for at in self._failures.pop(key, []) if at > now - self.window]
            recent.append(now)
            if len(recent) >= self.limit:
                self._banned[key] = now + self.ban
                self._banned.move_to_end(key)
                forget_oldest(self._banned)
                return True
            self._failures[key] = recent
            forget_oldest(self._failures)
            return False


def forget_oldest(kept: OrderedDict) -> None:
    while len(kept) > ADDRESSES_KEPT:
        kept.popitem(last=False)


def from_environment(environ: Mapping[str, str]) -> FailedCredentials | None:
    """The counter the formula configured, or None (unset, or a limit of 0). Raises ValueError on a bad value."""
    setting = environ.get("SENTRY_FAILED_CREDENTIALS", "").strip()
    if not setting:
        return None
    limit, window, ban = (int(part) for part in setting.split("/"))
    if limit <= 0:
        return None
    if window <= 0 or ban <= 0:
        raise ValueError(f"SENTRY_FAILED_CREDENTIALS: window and ban must be seconds above 0, got {setting!r}")
    return FailedCredentials(limit, window, ban)


def counted_client(peer: str, headers: Mapping[str, str]) -> str | None:
    """The client to count: nginx's X-Real-IP where nginx (a loopback peer) sent the request, else the peer;
    None where nginx says the client is exempt."""
    try:
        from_loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        from_loopback = False
    if not from_loopback:
        return peer
    if headers.get("X-Sentry-Uncounted") == "1":
        return None
    return headers.get("X-Real-IP") or peer


def carried_credentials(method: str, path: str, headers: Mapping[str, str]) -> bool:
    """A login, or a request with a password or token in its headers."""
    if method == "POST" and path == "/+login":
        return True
    return bool(headers.get("Authorization") or headers.get("X-Devpi-Auth"))


def tween_factory(handler, registry):
    """A pyramid tween, above devpi-server's own: refuses counted addresses, counts failed credentials."""
    from devpi_server.log import threadlog
    from pyramid.response import Response

    counter = from_environment(os.environ)
    if counter is None:
        return handler

    def refused(request, seconds: int) -> Response:
        status = 401 if request.path == "/+authcheck" else 429
        message = f"too many failed logins from this address: retry in {seconds} s"
        response = Response(status=status, json_body={"type": "error", "message": message})
        response.headers["Retry-After"] = str(seconds)
        return response

    def failed(request, status: int) -> bool:
        if status not in (401, 403) or not carried_credentials(request.method, request.path, request.headers):
            return False
        if request.path == "/+login":
            return status == 401
        try:
            return request.authenticated_userid is None  # checked already: devpi keeps it on the request
        except Exception:  # a check that cannot be made is not a failure
            return False

    def tween(request):
        client = counted_client(request.client_addr or "", request.headers)
        key = counter.key(client) if client else None
        if key is None:
            return handler(request)
        seconds = counter.refused_for(key)
        if seconds:
            return refused(request, seconds)
        response = handler(request)
        if failed(request, response.status_code) and counter.failed(key):
            threadlog.warning(
                "%s refused for %d s: %d failed logins within %d s",
                key,
                counter.ban,
                counter.limit,
                counter.window,
            )
        return response

    return tween
