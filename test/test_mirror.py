"""root/pypi as a caching mirror of an upstream index, for real, with no internet.

Test hosts on the test bridge: a fake PyPI (test/support/upstream.py: the real wheels of
test/upstream-wheels.txt behind nginx, HTTPS with a throw-away CA, PEP 503 and
PEP 691), a sentry host deployed by the formula with ``mirror:url`` pointing
at it and the CA given to the server alone (``mirror:ca_certificates``;
Debian's CA store stays as it came), and for one test a forward proxy. One
deployment is carried through the module: first installs with the upstream
up, then with it stopped, then gone from the network, a replica beside it, a
proxy as the only way out, a last re-apply.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.client import pip_install, sentry_client
from support.cluster import no_route_out
from support.host_roots import new_host
from support.hosts import BRIDGE_ADDRESS, BRIDGE_PREFIX, TestHost, host_address
from support.masterless import MasterlessSalt, StateRun
from support.paths import REPO
from support.upstream import ROOT as UPSTREAM_ROOT
from support.upstream import (
    SERVER_CA_FILE,
    SIMPLE_JSON,
    ForwardProxy,
    LogTail,
    Upstream,
    server_requests,
    upstream_wheels,
)
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

# Bridge host numbers of this module: away from the rest of the suite (1-60).
UPSTREAM_NUMBER, SENTRY_NUMBER, PROXY_NUMBER, DEFAULT_UPSTREAM_NUMBER, FIRST_START_NUMBER = 100, 101, 102, 103, 104
CA_BUNDLE_NUMBER = 109  # beside test_cache's 105-106 and test_ldap's 107-108
# devpi-init makes root/pypi with PyPI's URL, which is also the formula's default mirror:url.
DEFAULT_MIRROR_URL = yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]["mirror"]["url"]
ROOT_PASSWORD = "Mirror-Root-pw-73"
ALICE_PASSWORD = "Mirror-Alice-pw-19"
SERVERDIR = "/var/lib/sentry/data"
SERVER_LOG = "/var/log/sentry/sentry-server.log"
NGINX_LOG = "/var/log/nginx/access.log"
ROOT_PYPI = "http://127.0.0.1/root/pypi/+simple/"
DEV = "http://127.0.0.1/alice/dev/+simple/"
PRIVATE_NAME, PRIVATE_VERSION = "mirror-private", "1.0"
DATEUTIL = "python_dateutil-2.9.0.post0-py2.py3-none-any.whl"
SIX = "six-1.17.0-py2.py3-none-any.whl"
MPMATH = "mpmath-1.3.0-py3-none-any.whl"
UNKNOWN = "no-such-project-anywhere"
# How long a client may wait for an answer while the upstream is down:
# generous, against pip's own 15 s timeout with retries.
BOUND = 30

REPLICA_SERVERDIR = "/var/lib/sentry/replica"
REPLICA_OVERRIDE = {
    "sentry": {
        "server": {
            "program": "sentry-replica",
            "serverdir": REPLICA_SERVERDIR,
            "port": 3142,
            "master_url": "http://127.0.0.1:3141",
            "role": "standalone",
        },
        "nginx": {"site": "sentry-replica", "port": 8080},
    }
}


def mirror_pillar(deb: Path, upstream: Upstream, **mirror) -> dict:
    """root/pypi mirrors ``upstream`` (its CA from pillar); alice's dev index builds on it, as most sites use a mirror.

    With the upstream's project list (no_project_list false, not the default):
    the mirror then knows an unknown project is unknown even with the upstream
    gone, which several tests here show. The default is in
    test_the_first_start_asks_nothing_of_devpis_default_upstream.
    """
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "role": "primary"},
            "mirror": {
                "url": upstream.url,
                "no_project_list": False,
                "ca_certificates": upstream.ca_certificates(),
                **mirror,
            },
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD, "email": "alice@example.org"}},
                "indexes": {"alice/dev": {"bases": ["root/pypi"], "acl_upload": ["alice"]}},
            },
        }
    }


@dataclass
class Deployment:
    host: TestHost
    salt: MasterlessSalt
    first: StateRun


@dataclass
class Install:
    """One pip install: its outcome, how long it took, and each file it downloaded (name -> URL)."""

    completed: subprocess.CompletedProcess
    seconds: float
    files: dict[str, str]

    @property
    def not_found(self) -> bool:
        return self.completed.returncode != 0 and "No matching distribution found" in self.completed.stderr


def install(host: TestHost, index_url: str, *requirements: str, target: str, check: bool = True) -> Install:
    """pip install through sentry alone (support.client.pip_install), timed, with pip's report of what it downloaded."""
    report = f"{target}.report.json"
    started = time.monotonic()
    completed = pip_install(
        host, index_url, requirements[0], target, *requirements[1:], "--report", report, check=check
    )
    seconds = time.monotonic() - started
    files = {}
    if completed.returncode == 0:
        for item in json.loads(host.path(report).read_text())["install"]:
            url = item["download_info"]["url"]
            files[url.rsplit("/", 1)[1]] = url
    return Install(completed, seconds, files)


def url_path(url: str) -> str:
    """The path of a release file URL as the server names it (pip quotes '+f' as '%2Bf')."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetched_sha256(host: TestHost, url: str) -> str:
    return host.sh(f"set -o pipefail; curl -fsS '{url}' | sha256sum").stdout.split()[0]


def answer(host: TestHost, url: str, *headers: str, ca_file: str = "") -> tuple[int, float, str]:
    """Status, seconds and body of a GET from inside the host (HTTPS trusting ``ca_file``, else the host's store)."""
    options = [option for header in headers for option in ("-H", header)] + (["--cacert", ca_file] if ca_file else [])
    completed = host.run(
        ["curl", "-sS", "--max-time", "120", "-o", "/tmp/answer", "-w", "%{http_code} %{time_total}", *options, url]
    )
    status, seconds = completed.stdout.split()
    return int(status), float(seconds), host.path("/tmp/answer").read_text(errors="replace")


@pytest.fixture(scope="module")
def upstream():
    with new_host("mirror-up", address=host_address(UPSTREAM_NUMBER)) as host:
        no_route_out(host)
        yield Upstream(host, upstream_wheels()).start()


@pytest.fixture(scope="module")
def deployment(sentry_deb, upstream):
    with new_host("mirror", address=host_address(SENTRY_NUMBER)) as host:
        # Nothing beyond the bridge: no PyPI to fall back on, only the upstream test host.
        no_route_out(host)
        salt = MasterlessSalt(host, mirror_pillar(sentry_deb, upstream))
        yield Deployment(host, salt, salt.apply("sentry"))


@pytest.fixture(scope="module")
def private_wheel(deployment, tmp_path_factory) -> Path:
    """alice's own package in alice/dev, uploaded through nginx with the sentry client."""
    host = deployment.host
    wheel = make_wheel(tmp_path_factory.mktemp("mirror-wheels"), PRIVATE_NAME, PRIVATE_VERSION, payload="private")
    shutil.copy(wheel, host.path("/tmp") / wheel.name)
    sentry_client(host, "use", "http://127.0.0.1/")
    sentry_client(host, "login", "alice", password=ALICE_PASSWORD)
    sentry_client(host, "use", "alice/dev")
    sentry_client(host, "upload", f"/tmp/{wheel.name}")
    return wheel


@pytest.fixture(scope="module")
def first_installs(deployment, upstream, private_wheel) -> dict[str, Install]:
    """With the upstream up: python-dateutil (and six) from root/pypi, then with the private package from dev."""
    assert deployment.first.succeeded, deployment.first.failed or deployment.first.errors
    upstream.reconnect()
    upstream.serve()
    host = deployment.host
    return {
        "root/pypi": install(host, ROOT_PYPI, "python-dateutil==2.9.0.post0", target="/tmp/first-mirror"),
        "alice/dev": install(
            host, DEV, "python-dateutil==2.9.0.post0", f"{PRIVATE_NAME}=={PRIVATE_VERSION}", target="/tmp/first-dev"
        ),
    }


def test_upstream_speaks_both_simple_formats_and_the_servers_ca_file_trusts_it(deployment, upstream):
    host = deployment.host
    # curl in the sentry host, with the CA file the formula made for the server.
    status, _, page = answer(host, f"{upstream.url}six/", f"Accept: {SIMPLE_JSON}", ca_file=SERVER_CA_FILE)
    assert status == 200
    (entry,) = json.loads(page)["files"]
    assert entry["filename"] == SIX and entry["hashes"]["sha256"] == upstream.sha256[SIX]
    assert entry["requires-python"]
    status, _, page = answer(host, f"{upstream.url}six/", "Accept: text/html", ca_file=SERVER_CA_FILE)
    assert status == 200 and f"{SIX}#sha256={upstream.sha256[SIX]}" in page and "data-requires-python=" in page
    status, _, listing = answer(host, upstream.url, f"Accept: {SIMPLE_JSON}", ca_file=SERVER_CA_FILE)
    assert {project["name"] for project in json.loads(listing)["projects"]} == {
        "six",
        "python-dateutil",
        "mpmath",
        "sympy",
    }
    # Neither the sentry host's own CA store nor the upstream's trusts the throw-away CA: the trust
    # above is the file's doing, and the store is Debian's as it came.
    for where in (host, upstream.host):
        untrusted = where.run(["curl", "-sS", "-o", "/dev/null", upstream.url], check=False)
        assert untrusted.returncode == 60, untrusted.stderr  # curl: peer certificate cannot be authenticated
    store = host.path("/etc/ssl/certs/ca-certificates.crt").read_text()
    assert upstream.ca_pem.decode().strip() not in store
    bundle = host.path(SERVER_CA_FILE).read_text()
    assert bundle.startswith(store.rstrip("\n")) and bundle.rstrip().endswith(upstream.ca_pem.decode().strip())


def test_apply_points_root_pypi_at_the_upstream_and_reapply_changes_nothing(deployment, upstream):
    first = deployment.first
    assert first.succeeded, first.failed or first.errors
    assert "sentry-bootstrap-index-root/pypi" in first.changed
    status, _, body = answer(deployment.host, "http://127.0.0.1/root/pypi", "Accept: application/json")
    config = json.loads(body)["result"]
    assert status == 200
    assert (config["type"], config["mirror_url"], config["mirror_use_external_urls"]) == ("mirror", upstream.url, False)
    # The CA reaches the server through its environment: the file the formula made.
    program = deployment.host.path("/etc/supervisor/conf.d/sentry-server.conf").read_text()
    assert f'SSL_CERT_FILE="{SERVER_CA_FILE}"' in program and f'REQUESTS_CA_BUNDLE="{SERVER_CA_FILE}"' in program, (
        program
    )
    assert deployment.salt.apply("sentry").changed == {}


def test_pip_installs_mirrored_packages_through_nginx_with_the_upstreams_hashes(
    deployment, upstream, first_installs, private_wheel
):
    host = deployment.host
    from_mirror, from_dev = first_installs["root/pypi"], first_installs["alice/dev"]
    assert set(from_mirror.files) == {DATEUTIL, SIX}
    assert set(from_dev.files) == {DATEUTIL, SIX, private_wheel.name}
    for installed in ("/tmp/first-mirror/dateutil/__init__.py", "/tmp/first-mirror/six.py", "/tmp/first-dev/six.py"):
        assert host.path(installed).exists(), installed
    assert host.path("/tmp/first-dev/mirror_private/__init__.py").exists()
    # Mirrored files are root/pypi's, whichever index pip asked; the private one is alice/dev's.
    for install_ in (from_mirror, from_dev):
        for name in (DATEUTIL, SIX):
            assert install_.files[name].startswith("http://127.0.0.1/root/pypi/")
            assert url_path(install_.files[name]).startswith("/root/pypi/+f/")
    assert url_path(from_dev.files[private_wheel.name]).startswith("/alice/dev/+f/")

    expected = {**upstream.sha256, private_wheel.name: sha256_of(private_wheel.read_bytes())}
    for install_ in (from_mirror, from_dev):
        for name, url in install_.files.items():
            assert fetched_sha256(host, url) == expected[name], url
            stored = host.path(f"{SERVERDIR}/+files{url_path(url)}")
            assert sha256_of(stored.read_bytes()) == expected[name], stored
    # Installed twice, fetched from the upstream once: the second time came from sentry's copy.
    assert upstream.downloads(DATEUTIL) == upstream.downloads(SIX) == 1


def test_a_second_install_needs_no_upstream_and_files_come_from_disk(deployment, upstream, first_installs):
    upstream.stop_serving()
    host = deployment.host
    server_log, nginx_log = LogTail(host, SERVER_LOG), LogTail(host, NGINX_LOG)
    again = install(host, ROOT_PYPI, "python-dateutil==2.9.0.post0", target="/tmp/again-mirror")
    again_dev = install(
        host, DEV, "python-dateutil==2.9.0.post0", f"{PRIVATE_NAME}=={PRIVATE_VERSION}", target="/tmp/again-dev"
    )
    assert set(again.files) == set(first_installs["root/pypi"].files)
    assert set(again_dev.files) == set(first_installs["alice/dev"].files)
    # The server answered the simple pages; nginx served every release file from the serverdir.
    requests = server_requests(server_log.new())
    assert any("/+simple/python-dateutil/" in request for request in requests), requests
    assert not [request for request in requests if "/+f/" in request], requests
    served = nginx_log.new()
    for name in again_dev.files:
        assert re.search(rf'"GET \S+/{re.escape(name)} HTTP/1\.1" 200 ', served), name

    # An unknown project: pip says so, promptly (the upstream's project list is still fresh).
    unknown = install(host, ROOT_PYPI, UNKNOWN, target="/tmp/unknown", check=False)
    status, seconds, _ = answer(host, f"{ROOT_PYPI}{UNKNOWN}/")
    print(
        f"\nupstream stopped: cached install {again.seconds:.2f} s; unknown project: "
        f"pip not found in {unknown.seconds:.2f} s, server {status} in {seconds:.3f} s"
    )
    assert unknown.not_found, unknown.completed.stderr
    assert status == 404
    assert unknown.seconds < BOUND and seconds < BOUND


def test_an_unreachable_upstream_is_reported_and_private_packages_stay_served(
    deployment, upstream, first_installs, private_wheel
):
    """mpmath is on the upstream's list but was never fetched; the upstream refuses connections."""
    upstream.stop_serving()
    host = deployment.host
    server_log = LogTail(host, SERVER_LOG)
    status, _, body = answer(host, f"{ROOT_PYPI}mpmath/")
    # root/pypi itself says the upstream failed, and which URL.
    assert status == 502
    assert f"{upstream.url}mpmath/" in body
    # An index built on root/pypi takes the failing base for one without the project: an empty page.
    status, _, body = answer(host, f"{DEV}mpmath/")
    assert status == 200 and ".whl" not in body
    logged = server_log.new()
    assert f"ConnectError during http.async_get of {upstream.url}mpmath/" in logged
    assert "Failed to check mirror whitelist. Assume it does not exist" in logged
    # pip, through either index, only learns that there is no such distribution.
    for index_url in (ROOT_PYPI, DEV):
        failed = install(host, index_url, "mpmath", target="/tmp/no-mpmath", check=False)
        assert failed.not_found, failed.completed.stderr
        assert failed.seconds < BOUND
    # The private package of dev shadows root/pypi: no upstream asked, nothing waited for.
    private = install(host, DEV, f"{PRIVATE_NAME}=={PRIVATE_VERSION}", target="/tmp/private-upstream-down")
    assert set(private.files) == {private_wheel.name}
    print(f"\nupstream refusing: private package from dev in {private.seconds:.2f} s")
    assert private.seconds < BOUND


def test_cached_installs_survive_the_upstream_gone_and_a_restart(deployment, upstream, first_installs):
    """The upstream host gone from the network (no answer at all), and sentry restarted: nothing fresh in memory."""
    upstream.serve()
    upstream.disconnect()
    host = deployment.host
    host.run(["supervisorctl", "restart", "sentry-server"])
    host.wait_for("curl -fsS -o /dev/null http://127.0.0.1/+api", timeout=60)
    server_log = LogTail(host, SERVER_LOG)

    again = install(host, ROOT_PYPI, "python-dateutil==2.9.0.post0", target="/tmp/gone-mirror")
    again_dev = install(
        host, DEV, "python-dateutil==2.9.0.post0", f"{PRIVATE_NAME}=={PRIVATE_VERSION}", target="/tmp/gone-dev"
    )
    assert set(again.files) == {DATEUTIL, SIX}
    assert set(again_dev.files) == set(first_installs["alice/dev"].files)
    logged = server_log.new()
    # Refused by the network (no ARP answer) or timed out (packets vanish): either way, named.
    failure = rf"Connect(Error|Timeout) during http.async_get of {re.escape(upstream.url)}python-dateutil/"
    assert re.search(failure, logged), logged
    assert "serving stale links" in logged, logged

    unknown = install(host, ROOT_PYPI, UNKNOWN, target="/tmp/gone-unknown", check=False)
    status, seconds, _ = answer(host, f"{ROOT_PYPI}{UNKNOWN}/")
    # With no fresh list of the upstream's projects, one never fetched is not found either (502 before).
    never_fetched, _, _ = answer(host, f"{ROOT_PYPI}mpmath/")
    private = install(host, DEV, f"{PRIVATE_NAME}=={PRIVATE_VERSION}", target="/tmp/gone-private")
    print(
        f"\nupstream gone, server restarted: cached install {again.seconds:.2f} s (root/pypi), "
        f"{again_dev.seconds:.2f} s (dev); unknown project: pip not found in {unknown.seconds:.2f} s, "
        f"server {status} in {seconds:.2f} s; private package {private.seconds:.2f} s"
    )
    assert unknown.not_found, unknown.completed.stderr
    assert status == never_fetched == 404
    assert "using stale projects list" in server_log.new()
    for took in (again.seconds, again_dev.seconds, unknown.seconds, seconds, private.seconds):
        assert took < BOUND


def test_a_replica_serves_the_mirrored_files(deployment, upstream, first_installs):
    """A replica beside the master copies the mirrored files and serves them, the upstream still gone."""
    upstream.disconnect()
    host, salt = deployment.host, deployment.salt
    override = f"pillar={json.dumps(REPLICA_OVERRIDE)}"
    replica = salt.apply("sentry", override)
    try:
        assert replica.succeeded, replica.failed or replica.errors
        mirrored = {name: url for name, url in first_installs["root/pypi"].files.items()}
        for url in mirrored.values():
            host.wait_for(f"test -f '{REPLICA_SERVERDIR}/+files{url_path(url)}'", timeout=120)
        replica_log = LogTail(host, "/var/log/sentry/sentry-replica.log")
        via = install(host, "http://127.0.0.1:8080/root/pypi/+simple/", "python-dateutil", target="/tmp/via-replica")
        assert set(via.files) == set(mirrored)
        for name, url in via.files.items():
            assert url.startswith("http://127.0.0.1:8080/root/pypi/")
            assert fetched_sha256(host, url) == upstream.sha256[name]
            stored = host.path(f"{REPLICA_SERVERDIR}/+files{url_path(url)}")
            assert sha256_of(stored.read_bytes()) == upstream.sha256[name]
        assert not [request for request in server_requests(replica_log.new()) if "/+f/" in request]
        assert salt.apply("sentry", override).changed == {}
    finally:
        for sls in ("sentry.supervisor.clean", "sentry.nginx.clean"):
            removed = salt.apply(sls, override)
            assert removed.succeeded, removed.failed or removed.errors


def test_https_proxy_is_the_way_out_when_the_upstream_is_not_reachable_directly(deployment, upstream, sentry_deb):
    upstream.reconnect()
    upstream.serve()
    host, salt = deployment.host, deployment.salt
    bridge = ipaddress.ip_network(f"{BRIDGE_ADDRESS}/{BRIDGE_PREFIX}", strict=False)
    with new_host("mirror-proxy", address=host_address(PROXY_NUMBER)) as proxy_host:
        no_route_out(proxy_host)
        # A proxy that wants a login: its password is a secret like the others.
        proxy_password = f"Proxy-{secrets.token_urlsafe(9)}"
        proxy = ForwardProxy(proxy_host, network=str(bridge), login=("ci", proxy_password)).start()
        # A company network: the index host reaches the outside only through the proxy.
        blocked = ["ip", "route", "add", "unreachable", f"{upstream.address}/32"]
        host.run(blocked)
        try:
            server_log = LogTail(host, SERVER_LOG)
            direct = install(host, ROOT_PYPI, "mpmath==1.3.0", target="/tmp/mpmath-direct", check=False)
            assert direct.not_found, direct.completed.stderr
            assert f"ConnectError during http.async_get of {upstream.url}" in server_log.new()
            assert proxy.connects() == []

            salt.set_pillar(mirror_pillar(sentry_deb, upstream, https_proxy=proxy.url))
            proxied = salt.apply("sentry")
            assert proxied.succeeded, proxied.failed or proxied.errors
            assert {"sentry-supervisor-program-file", "sentry-supervisor-program-running"} <= set(proxied.changed)
            assert proxy_password not in proxied.stdout + proxied.stderr
            via = install(host, ROOT_PYPI, "mpmath==1.3.0", target="/tmp/mpmath-proxied")
            assert set(via.files) == {MPMATH}
            assert fetched_sha256(host, via.files[MPMATH]) == upstream.sha256[MPMATH]
            assert f"{upstream.address}:443" in proxy.connects()
            assert upstream.downloads(MPMATH) == 1
        finally:
            host.run(["ip", "route", "del", *blocked[3:]], check=False)
            salt.set_pillar(mirror_pillar(sentry_deb, upstream))
            restored = salt.apply("sentry")
        assert restored.succeeded, restored.failed or restored.errors
        assert proxy_password not in restored.stdout + restored.stderr


def test_the_first_start_asks_nothing_of_devpis_default_upstream(sentry_deb, upstream):
    """mirror:url elsewhere and no_project_list true: no project list is fetched from PyPI at the first start either.

    PyPI's list is the one that takes minutes of CPU and hundreds of MB to
    index (test/bench/bench_project_list.py). A test host answers for PyPI's
    name here (the sentry host's /etc/hosts and a certificate for that name),
    listing a thousand projects and logging what it is asked.
    """
    default_name = urllib.parse.urlsplit(DEFAULT_MIRROR_URL).hostname
    with (
        new_host("mirror-default", address=host_address(DEFAULT_UPSTREAM_NUMBER)) as default_host,
        new_host("mirror-first", address=host_address(FIRST_START_NUMBER)) as host,
    ):
        for started in (default_host, host):
            no_route_out(started)
        default = Upstream(default_host, upstream_wheels(), generated_projects=1000, names=(default_name,)).start()
        with host.path("/etc/hosts").open("a") as hosts:
            hosts.write(f"{default.address} {default_name}\n")
        company = LogTail(upstream.host, f"{UPSTREAM_ROOT}/access.log")

        pillar = mirror_pillar(sentry_deb, upstream)
        del pillar["sentry"]["mirror"]["no_project_list"]  # the default: true
        pillar["sentry"]["mirror"]["ca_certificates"].update(default.ca_certificates("example-corp-pypi-stand-in"))
        first = MasterlessSalt(host, pillar).apply("sentry")
        assert first.succeeded, first.failed or first.errors
        assert answer(host, DEFAULT_MIRROR_URL, ca_file=SERVER_CA_FILE)[0] == 200  # the server could reach it
        # devpi-web asks a new mirror for its project names as soon as it sees the index.
        host.wait_for(
            "grep -q 'triggering load of initial projectnames for root/pypi' /var/log/sentry/sentry-server.log",
            timeout=60,
        )
        time.sleep(3)  # its request follows that line within milliseconds; the apply took longer anyway
        status, _, body = answer(host, "http://127.0.0.1/root/pypi", "Accept: application/json")
        assert status == 200
        assert json.loads(body)["result"]["mirror_url"] == upstream.url
        asked = [line for line in default.access_log().splitlines() if "devpi-server" in line]
        assert asked == [], "\n".join(asked)
        assert " /simple/ " not in company.new()
        # pip works the same without the list: a project's page is fetched when asked for.
        installed = install(host, ROOT_PYPI, "python-dateutil", target="/tmp/without-list")
        assert {name.split("-")[0] for name in installed.files} >= {"python_dateutil", "six"}, installed.files
        assert " /simple/ " not in company.new()


def test_mirror_ca_bundle_trusts_the_upstream_with_the_hosts_store_left_alone(sentry_deb, upstream):
    """mirror:ca_bundle: the company's CA in a file of the host's own, Debian's CA store as it came.

    The server's environment names the file (SSL_CERT_FILE), so the mirror
    trusts the upstream while everything else on the host does not (curl
    there still refuses it): the CA reaches only the server.
    """
    with new_host("mirror-bundle", address=host_address(CA_BUNDLE_NUMBER)) as host:
        no_route_out(host)
        bundle = "/etc/ssl/company-upstream-ca.pem"
        host.path(bundle).write_bytes(upstream.ca_pem)
        untrusted = host.run(["curl", "-sS", "-o", "/dev/null", upstream.url], check=False)
        assert untrusted.returncode == 60, untrusted.stderr  # the host's own store does not hold the CA
        salt = MasterlessSalt(host, mirror_pillar(sentry_deb, upstream, ca_bundle=bundle, ca_certificates={}))
        applied = salt.apply("sentry")
        assert applied.succeeded, applied.failed or applied.errors
        program = host.path("/etc/supervisor/conf.d/sentry-server.conf").read_text()
        assert f'SSL_CERT_FILE="{bundle}"' in program, program
        installed = install(host, ROOT_PYPI, "six", target="/tmp/with-bundle")
        assert set(installed.files) == {SIX}, installed.files
        assert host.run(["curl", "-sS", "-o", "/dev/null", upstream.url], check=False).returncode == 60


def test_reapply_changes_nothing(deployment, upstream):
    upstream.reconnect()
    upstream.serve()
    again = deployment.salt.apply("sentry")
    assert again.succeeded, again.failed
    assert again.changed == {}
