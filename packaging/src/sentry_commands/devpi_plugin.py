"""sentry's own devpi-server plugin: failed credentials counted per address (failed_credentials.py), and LDAP
logins that fail, rather than hang, while the directory is down.

devpi-ldap 2.2.0 builds an ldap3 server pool that looks for a live server
forever, with no connect timeout: while the directory is down every LDAP
login holds a server thread for good, and its client sees the proxy time
out. devpi-ldap takes its ldap3 from an attribute meant for injection
(``LDAP.ldap3``); this plugin hands it one whose pool tries each server
once, with a connect timeout. A directory that cannot be reached then makes
devpi-ldap raise AuthException, which devpi-server does not catch on this
hook: this plugin logs it and lets the login go on without LDAP, so local
users (root is never asked to LDAP) still log in and directory users are
refused (401) at once.
"""

from __future__ import annotations

import functools
import types

from devpi_server.auth import AuthException
from devpi_server.log import threadlog
from pluggy import HookimplMarker

hookimpl = HookimplMarker("devpiserver")

CONNECT_TIMEOUT = 5  # seconds to reach one LDAP server
POOL_CYCLES = 1  # passes over the server pool before giving up


def bounded_ldap3(ldap3: types.ModuleType) -> types.SimpleNamespace:
    """``ldap3`` with a pool that gives up after POOL_CYCLES and servers that connect within CONNECT_TIMEOUT."""
    namespace = types.SimpleNamespace(**{name: getattr(ldap3, name) for name in dir(ldap3) if name[:2] != "__"})
    namespace.ServerPool = functools.partial(ldap3.ServerPool, active=POOL_CYCLES, exhaust=False)
    namespace.Server = functools.partial(ldap3.Server, connect_timeout=CONNECT_TIMEOUT)
    return namespace


@hookimpl
def devpiserver_add_parser_options():
    """The earliest hook, before any login: devpi-ldap gets the bounded ldap3."""
    try:
        from devpi_ldap.main import LDAP
    except ImportError:
        return
    if not isinstance(LDAP.ldap3, types.SimpleNamespace):
        LDAP.ldap3 = bounded_ldap3(LDAP.ldap3)


@hookimpl(wrapper=True)
def devpiserver_auth_request(username):
    try:
        return (yield)
    except AuthException as exc:
        threadlog.error("LDAP login of %r failed, the directory does not answer: %s", username, exc)
        return None  # as if LDAP did not know the user: local users still log in, others are refused


@hookimpl
def devpiserver_pyramid_configure(config, pyramid_config):
    """Failed credentials counted per client address, above all of devpi-server's tweens: a refused address
    costs no check."""
    from pyramid.tweens import INGRESS

    pyramid_config.add_tween("sentry_commands.failed_credentials.tween_factory", under=INGRESS)
