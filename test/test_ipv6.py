"""nginx on both IP stacks: dual-stack by default, IPv6-only hosts, IPv4 only by pillar.

Two test hosts on the test bridge: a sentry host and a client that reaches it
over IPv4 or IPv6, as another machine on the network would.
"""

from __future__ import annotations

import pytest
from support.client import pip_install, upload_as_root
from support.cluster import no_route_out
from support.host_roots import new_host
from support.hosts import host_address, host_address6
from support.masterless import MasterlessSalt
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

ROOT_PASSWORD = "Ipv6-Root-pw-42"
ALL_IPV4 = "0.0.0.0"  # noqa: S104 - what nginx is told to listen on
NGINX_STATES = {"sentry-nginx-site-file", "sentry-nginx-config-valid", "sentry-nginx-service"}


def pillar(deb, **nginx) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True},
            "nginx": nginx,
        }
    }


def answers(client, url: str) -> int:
    """curl's exit code for ``url`` from ``client`` (0: it answered 2xx; 7: connection refused)."""
    return client.run(["curl", "-fsS", "-g", "-o", "/dev/null", "--max-time", "10", url], check=False).returncode


def test_dual_stack_by_default_and_ipv4_only_by_pillar(sentry_deb):
    v4, v6 = host_address(51), host_address6(51)
    with (
        new_host("v6-dual", address=v4, address6=v6) as server,
        new_host("v6-dual-cl", address=host_address(52), address6=host_address6(52)) as client,
    ):
        no_route_out(server)  # nothing beyond the bridge: apt fails at once instead of timing out
        salt = MasterlessSalt(server, pillar(sentry_deb))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        assert answers(client, f"http://{v4}/+api") == 0
        assert answers(client, f"http://[{v6}]/+api") == 0

        salt.set_pillar(pillar(sentry_deb, listen_addresses=[ALL_IPV4]))
        restricted = salt.apply("sentry")
        assert restricted.succeeded, restricted.failed
        assert set(restricted.changed) == NGINX_STATES
        assert answers(client, f"http://{v4}/+api") == 0
        assert answers(client, f"http://[{v6}]/+api") == 7
        assert salt.apply("sentry").changed == {}

        salt.set_pillar(pillar(sentry_deb, listen_addresses=[ALL_IPV4, "fd5e::/64"]))
        refused = salt.apply("sentry")
        assert refused.returncode != 0 and "sentry:nginx:listen_addresses" in refused.errors


def test_ipv6_only_host_serves_pip_over_ipv6(sentry_deb, tmp_path):
    v6 = host_address6(53)
    with new_host("v6-only", address6=v6) as server, new_host("v6-only-cl", address6=host_address6(54)) as client:
        assert "inet " not in server.run(["ip", "-o", "addr", "show", "eth0"]).stdout
        salt = MasterlessSalt(server, pillar(sentry_deb))
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        assert salt.apply("sentry").changed == {}

        wheel = make_wheel(tmp_path, "ipv6-probe", "1.0", payload="v6")
        upload_as_root(server, "http://[::1]/", ROOT_PASSWORD, wheel, "dev", bases="")

        pip_install(client, f"http://[{v6}]/root/dev/+simple/", "ipv6-probe==1.0", "/tmp/installed")
        assert client.path("/tmp/installed/ipv6_probe/__init__.py").read_text().endswith("PAYLOAD = 'v6'\n")
