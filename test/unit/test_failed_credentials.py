"""The deb's count of failed credentials per address (packaging/src/sentry_commands/failed_credentials.py):
what an address counts as, the window, the refusal and its end, the environment the formula writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "packaging" / "src" / "sentry_commands" / "failed_credentials.py"
spec = importlib.util.spec_from_file_location("sentry_failed_credentials_unit", MODULE)
failed_credentials = importlib.util.module_from_spec(spec)
spec.loader.exec_module(failed_credentials)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter(limit: int = 3, window: float = 60, ban: float = 100) -> tuple:
    clock = Clock()
    return failed_credentials.FailedCredentials(limit, window, ban, clock), clock


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # a host's /64, not each of its addresses
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("127.0.0.1", None),
        ("::1", None),
        ("", None),
        ("unix:/run/x", None),
    ],
)
def test_what_an_address_counts_as(address, key):
    counting, _ = counter()
    assert counting.key(address) == key


def test_limit_failures_within_the_window_refuse_the_address_for_the_ban():
    counting, clock = counter(limit=3, window=60, ban=100)
    assert not counting.failed("192.0.2.7")
    clock.now += 30
    assert not counting.failed("192.0.2.7")
    assert counting.refused_for("192.0.2.7") == 0
    clock.now += 29
    assert counting.failed("192.0.2.7")
    assert counting.refused_for("192.0.2.7") == 100
    assert counting.refused_for("192.0.2.8") == 0  # another address: never
    clock.now += 99.5
    assert counting.refused_for("192.0.2.7") == 1  # whole seconds, rounded up
    clock.now += 1
    assert counting.refused_for("192.0.2.7") == 0


def test_failures_older_than_the_window_are_forgotten():
    counting, clock = counter(limit=3, window=60)
    for _ in range(10):
        assert not counting.failed("192.0.2.7")
        clock.now += 31  # two within any 60 s, never three


def test_a_refusal_ends_with_a_clean_slate():
    counting, clock = counter(limit=2, window=60, ban=10)
    counting.failed("192.0.2.7")
    assert counting.failed("192.0.2.7")
    clock.now += 11
    assert counting.refused_for("192.0.2.7") == 0
    assert not counting.failed("192.0.2.7")  # the failures that led to it do not count again


def test_addresses_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(failed_credentials, "ADDRESSES_KEPT", 100)
    counting, _ = counter(limit=5)
    for number in range(1000):
        counting.failed(f"198.51.{number // 250}.{number % 250}")
    assert len(counting._failures) == 100


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"SENTRY_FAILED_CREDENTIALS": ""}, None),
        ({"SENTRY_FAILED_CREDENTIALS": "0/600/600"}, None),
        ({"SENTRY_FAILED_CREDENTIALS": "30/600/900"}, (30, 600, 900)),
        ({"SENTRY_FAILED_CREDENTIALS": " 5/60/30 "}, (5, 60, 30)),
    ],
)
def test_the_formulas_environment(environ, expected):
    counting = failed_credentials.from_environment(environ)
    if expected is None:
        assert counting is None
    else:
        assert (counting.limit, counting.window, counting.ban) == expected


@pytest.mark.parametrize("setting", ["30/600", "a/b/c", "30/0/600", "30/600/-1"])
def test_a_bad_environment_stops_the_server(setting):
    with pytest.raises(ValueError):
        failed_credentials.from_environment({"SENTRY_FAILED_CREDENTIALS": setting})


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("127.0.0.1", {"X-Real-IP": "192.0.2.7"}, "192.0.2.7"),  # nginx on this host
        ("::1", {"X-Real-IP": "2001:db8::7", "X-Sentry-Uncounted": "0"}, "2001:db8::7"),
        ("127.0.0.1", {"X-Real-IP": "192.0.2.7", "X-Sentry-Uncounted": "1"}, None),  # nginx: exempt
        ("127.0.0.1", {}, "127.0.0.1"),  # a tool on this host
        ("192.0.2.9", {"X-Real-IP": "127.0.0.1"}, "192.0.2.9"),  # a client claiming to be loopback: itself
        ("192.0.2.9", {"X-Sentry-Uncounted": "1"}, "192.0.2.9"),  # or exempt
    ],
)
def test_the_client_counted(peer, headers, client):
    assert failed_credentials.counted_client(peer, headers) == client


@pytest.mark.parametrize(
    ("method", "path", "headers", "carried"),
    [
        ("POST", "/+login", {}, True),
        ("GET", "/+login", {}, False),
        ("GET", "/alice/dev/+simple/", {"Authorization": "Basic YTpi"}, True),
        ("GET", "/+authcheck", {"X-Devpi-Auth": "YTpi"}, True),
        ("GET", "/alice/dev/+simple/", {}, False),
    ],
)
def test_what_carries_credentials(method, path, headers, carried):
    assert failed_credentials.carried_credentials(method, path, headers) is carried
