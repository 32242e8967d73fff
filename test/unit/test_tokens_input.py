"""sentry_tokens.create (sentry_admin.token_create) refuses bad limits before it asks the server anything
(no host, no server here).

Tokens made, used and revoked on a real server: test_lockdown.
"""

from __future__ import annotations

import inspect
import time

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load

tokens = load("_modules/sentry_tokens.py", "sentry_tokens_unit")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"allowed": "upload,bogus"}, "unknown permission(s) bogus"),
        ({"expires": "0"}, "expires is a time from now"),
        ({"expires": "3 weeks"}, "expires is a time from now"),
        ({"indexes": "dev"}, "indexes are user/index names, got dev"),
        ({"indexes": ["team/dev", 3]}, "indexes is a comma-separated string or a list of names"),
        ({"path": "ci.token"}, "path must be an absolute path in an existing directory"),
        ({"path": "/no/such/dir/ci.token"}, "path must be an absolute path in an existing directory"),
    ],
)
def test_bad_limits_are_refused_naming_what_is_wrong(arguments, message):
    with pytest.raises(CommandExecutionError) as refused:
        tokens.create(**{"user": "ci", "path": "/tmp/ci.token", **arguments})
    assert message in str(refused.value)


@pytest.mark.parametrize(("expires", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("45m", 2700), (3600, 3600)])
def test_expiry_is_a_time_from_now(expires, seconds):
    assert abs(tokens._expires_at(expires) - (time.time() + seconds)) < 5


@pytest.mark.parametrize("name", ["create", "list_", "delete"])
def test_every_function_takes_an_instance_and_says_so(name):
    function = getattr(tokens, name)
    assert "instance" in inspect.signature(function).parameters, name
    assert "CLI Example:" in function.__doc__ and "instance=sentry-b" in function.__doc__, name
