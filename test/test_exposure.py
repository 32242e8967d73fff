"""What a deployed sentry shows the network (issue 6, exposure).

One test host with an address on the test bridge: this test process, in the
machine's own namespace, is a caller from outside (the host sees the bridge's
address, not loopback). Only nginx listens beyond loopback; /+changelog and
/+status answer only loopback and the configured replica addresses, also not
through a front; uploads are bounded; only root makes users and indexes; the
files the formula writes have tight modes and owners.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.client import log_in, sentry_client
from support.cluster import no_route_out
from support.host_roots import new_host
from support.hosts import BRIDGE_ADDRESS, host_address
from support.masterless import MasterlessSalt
from support.tls_scan import assert_mozilla_intermediate
from support.upstream import MAKE_CERTIFICATES
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

ADDRESS = host_address(41)
ROOT_PASSWORD = "Exposure-Root-pw-41"
UPLOADER_PASSWORD = "Exposure-Up-pw-42"
NGINX_STATES = {"sentry-nginx-site-file", "sentry-nginx-config-valid", "sentry-nginx-service"}
CLIENT = {"DEVPI_CLIENTDIR": "/tmp/sentry-client"}


def pillar(deb, **nginx) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            # A master: replicas could follow it, so its changelog is served.
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True, "role": "primary"},
            "nginx": nginx,
        }
    }


def outside(
    path: str, method: str = "GET", body: bytes | None = None, port: int = 80, **headers: str
) -> tuple[int, bytes]:
    """A request from this process (outside the host), with no proxy: the status and the body."""
    request = urllib.request.Request(f"http://{ADDRESS}:{port}{path}", data=body, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def at_once(count: int, path: str, method: str = "GET", body: bytes | None = None, port: int = 80, **headers: str):
    """``count`` requests sent together from outside: how many got each status, and the Retry-After of the 429s."""

    def one(_) -> tuple[int, str | None]:
        request = urllib.request.Request(f"http://{ADDRESS}:{port}{path}", data=body, method=method, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, response.headers.get("Retry-After")
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Retry-After")

    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(one, range(count)))
    return Counter(code for code, _ in answers), {retry for code, retry in answers if code == 429}


def refused_by_nginx(code: int, body: bytes | str) -> bool:
    """nginx's own 403 page, not an answer of the server (which refuses a changelog read without a replica's token)."""
    return code == 403 and "<center>nginx" in (body.decode(errors="replace") if isinstance(body, bytes) else body)


def api(path: str, method: str, data: dict, auth: str = "") -> tuple[int, bytes]:
    """A JSON request to the HTTP API from outside, as the user of ``auth`` (X-Devpi-Auth) or anonymous."""
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if auth:
        headers["X-Devpi-Auth"] = auth
    return outside(path, method, json.dumps(data).encode(), **headers)


def login(user: str, password: str) -> str:
    """X-Devpi-Auth for ``user``, logged in from outside; the password goes in the request body."""
    code, body = api("/+login", "POST", {"user": user, "password": password})
    assert code == 200, body
    token = json.loads(body)["result"]["password"]
    return base64.b64encode(f"{user}:{token}".encode()).decode()


class Exposed:
    def __init__(self, host, salt: MasterlessSalt, deb) -> None:
        self.host, self.salt, self.deb = host, salt, deb

    def inside(self, path: str, *options: str) -> tuple[int, str]:
        """GET through nginx from inside the host (loopback): the status and the body."""
        fetched = self.host.run(
            ["curl", "-sS", "-o", "/tmp/inside", "-w", "%{http_code}", *options, f"http://127.0.0.1{path}"]
        )
        return int(fetched.stdout), self.host.path("/tmp/inside").read_text()

    def apply(self, pillar_: dict, sls: str = "sentry"):
        self.salt.set_pillar(pillar_)
        run = self.salt.apply(sls)
        assert run.succeeded, run.failed or run.errors
        return run


@pytest.fixture(scope="module")
def exposed(sentry_deb):
    with new_host("exposure", address=ADDRESS) as host:
        no_route_out(host)  # nothing to fetch from elsewhere; fail at once rather than time out
        salt = MasterlessSalt(host, pillar(sentry_deb))
        deployed = Exposed(host, salt, sentry_deb)
        deployed.first = salt.apply("sentry")
        yield deployed


def test_first_apply_succeeds(exposed):
    assert exposed.first.succeeded, exposed.first.failed or exposed.first.errors


def test_only_nginx_listens_beyond_loopback(exposed):
    listening = exposed.host.run(["ss", "-Hltnp"]).stdout.splitlines()
    server_pid = exposed.host.run(["supervisorctl", "pid", "sentry-server"]).stdout.strip()
    sockets = []  # (address, port, process names, pids)
    for line in listening:
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        sockets.append((address, int(port), set(re.findall(r'"([^"]+)"', line)), set(re.findall(r"pid=(\d+)", line))))
    assert [(address, port) for address, port, _, pids in sockets if server_pid in pids] == [("127.0.0.1", 3141)], (
        listening
    )
    beyond_loopback = [
        (address, port, names) for address, port, names, _ in sockets if address not in ("127.0.0.1", "[::1]")
    ]
    assert beyond_loopback, listening
    assert all(names == {"nginx"} and port == 80 for _, port, names in beyond_loopback), listening
    anywhere = {"0.0.0.0", "*", "[::]"}  # noqa: S104 - what nginx's 'listen 80' binds
    assert {address for address, _, _ in beyond_loopback} <= anywhere, listening


def test_changelog_and_status_are_closed_to_outside(exposed):
    for path in ("/+changelog/0", "/+changelog/0-", "/+status", "/%2Bstatus", "//+status", "/alice/../+changelog/0"):
        assert refused_by_nginx(*outside(path, Accept="application/json")), path
    # The rest of the API is open, and nginx tells the server the URL it is reached at.
    code, body = outside("/+api", Accept="application/json")
    assert code == 200
    assert json.loads(body)["result"]["login"] == f"http://{ADDRESS}/+login"


def test_changelog_and_status_answer_on_loopback(exposed):
    code, body = exposed.inside("/+status", "-H", "Accept: application/json")
    assert code == 200, body
    assert json.loads(body)["result"]["serial"] >= 0
    # The server itself answers (and wants a replica's token: a replica sends one).
    code, body = exposed.inside("/+changelog/0")
    assert code < 500 and not refused_by_nginx(code, body), (code, body)


def test_a_replica_address_may_read_them(exposed):
    opened = exposed.apply(pillar(exposed.deb, replica_addresses=[BRIDGE_ADDRESS]))
    try:
        assert set(opened.changed) == NGINX_STATES
        code, body = outside("/+status", Accept="application/json")
        assert code == 200, body
        assert json.loads(body)["result"]["serial"] >= 0
        code, body = outside("/+changelog/0")
        assert code < 500 and not refused_by_nginx(code, body), (code, body)
    finally:
        exposed.apply(pillar(exposed.deb))
    assert refused_by_nginx(*outside("/+status"))


def test_a_front_never_passes_them_on(exposed):
    """The master sees the front (here on loopback, so allowed) as the caller: the front must refuse."""
    with_front = pillar(exposed.deb)
    with_front["sentry"]["front"] = {"master": "127.0.0.1:80", "port": 8080}
    exposed.apply(with_front, "sentry.front")
    try:
        assert refused_by_nginx(*outside("/+status", port=8080))
        assert refused_by_nginx(*outside("/+changelog/0", port=8080))
        code, body = outside("/+api", port=8080, Accept="application/json")
        assert code == 200, body
    finally:
        exposed.apply(with_front, "sentry.front.clean")
        exposed.salt.set_pillar(pillar(exposed.deb))
    assert exposed.host.run(["curl", "-sS", "http://127.0.0.1:8080/"], check=False).returncode != 0


def test_only_root_makes_users_and_indexes(exposed):
    assert "--restrict-modify root" in exposed.host.run(["ps", "-eo", "args"]).stdout
    code, answer = api("/uploader", "PUT", {"password": UPLOADER_PASSWORD})
    assert code in (401, 403), answer
    root = login("root", ROOT_PASSWORD)
    code, answer = api("/uploader", "PUT", {"password": UPLOADER_PASSWORD}, auth=root)
    assert code == 201, answer
    code, answer = api("/uploader/dev", "PUT", {"bases": []}, auth=root)
    assert code in (200, 201), answer
    # A user cannot make indexes of their own either.
    code, answer = api("/uploader/own", "PUT", {"bases": []}, auth=login("uploader", UPLOADER_PASSWORD))
    assert code == 403, answer


def upload(exposed, wheel) -> subprocess.CompletedProcess:
    """The sentry client's upload of ``wheel`` to uploader/dev through nginx, as uploader."""
    host = exposed.host
    host.path("/tmp").joinpath(wheel.name).write_bytes(wheel.read_bytes())
    sentry_client(host, "use", "http://127.0.0.1/uploader/dev")
    sentry_client(host, "login", "uploader", password=UPLOADER_PASSWORD)
    return host.run(["sentry", "upload", f"/tmp/{wheel.name}"], check=False, env=CLIENT)


def test_uploads_up_to_the_configured_size(exposed, tmp_path):
    # Random bytes in base64: about 2.7 MB that no compression shrinks below 1 MB.
    payload = base64.b64encode(os.urandom(2_000_000)).decode()
    below = make_wheel(tmp_path, "exposure-big", "1.0", payload=payload)
    uploaded = upload(exposed, below)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    code, _ = outside("/uploader/dev/+simple/exposure-big/")
    assert code == 200

    limited = exposed.apply(pillar(exposed.deb, client_max_body_size="1M"))
    try:
        # nginx's limit, and the server's the same (it restarts with it).
        assert set(limited.changed) == NGINX_STATES | {
            "sentry-supervisor-program-file",
            "sentry-supervisor-program-running",
        }
        assert f"--max-request-body-size {1024 * 1024}" in exposed.host.run(["ps", "-eo", "args"]).stdout
        above = make_wheel(tmp_path, "exposure-big", "2.0", payload=payload)
        refused = upload(exposed, above)
        assert refused.returncode != 0
        assert "413" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
        code, _ = outside("/uploader/dev/", "POST", b"x" * 2_000_000, **{"Content-Type": "application/octet-stream"})
        assert code == 413
    finally:
        exposed.apply(pillar(exposed.deb))


def test_modes_and_owners(exposed):
    expected = {
        "/var/lib/sentry": "750 sentry:sentry",
        "/var/lib/sentry/data": "750 sentry:sentry",
        "/var/lib/sentry/.secret": "600 sentry:sentry",
        "/var/log/sentry": "750 sentry:sentry",
        "/etc/supervisor/conf.d/sentry-server.conf": "640 root:sentry",
        "/etc/nginx/sites-available/sentry.conf": "640 root:sentry",
        "/etc/sentry/theme": "750 root:sentry",
        "/etc/sentry/theme/templates": "750 root:sentry",
        "/etc/sentry/theme/templates/logo.pt": "640 root:sentry",
        "/etc/sentry/theme/static/style.css": "640 root:sentry",
    }
    found = {path: exposed.host.run(["stat", "-c", "%a %U:%G", path]).stdout.strip() for path in expected}
    assert found == expected
    # They are still read: nginx proxies, supervisor runs the server, the server uses the theme.
    code, page = exposed.inside("/")
    assert code == 200 and 'class="sentry-theme"' in page


def test_reapply_changes_nothing(exposed):
    again = exposed.salt.apply("sentry")
    assert again.succeeded, again.failed or again.errors
    assert again.changed == {}


# sentry:nginx:limits (issue 28). Last in the module: the login limit of this test's address outlasts a test.
BOGUS_AUTH = {"X-Devpi-Auth": base64.b64encode(b"nobody:not-a-token").decode(), "Accept": "application/json"}
WRONG_PASSWORD = "not-the-password"
SMALL_LIMITS = {"credentials_rate": "1r/s", "credentials_burst": 4}


def wrong_logins(count: int, port: int = 80):
    body = json.dumps({"user": "root", "password": "not-the-password"}).encode()
    return at_once(count, "/+login", "POST", body, port=port, **{"Content-Type": "application/json"})


def test_a_login_flood_gets_429_at_once_and_the_server_sees_the_burst_only(exposed):
    statuses, retry_after = wrong_logins(30)
    # Defaults: 10 at once beyond 10 a minute; the server checks those, nginx refuses the rest itself.
    assert 10 <= statuses[401] <= 12 and statuses[401] + statuses[429] == 30, statuses
    assert retry_after == {"6"}
    # Anonymous reads are not limited; this host's own callers (loopback) still log in.
    assert at_once(20, "/+api", Accept="application/json")[0] == Counter({200: 20})
    assert log_in(exposed.host, "http://127.0.0.1", "root", ROOT_PASSWORD)[0] == 200


def test_requests_with_credentials_are_limited_but_never_from_exempt_addresses_or_replicas(exposed):
    try:
        limited = exposed.apply(pillar(exposed.deb, limits=SMALL_LIMITS))
        assert set(limited.changed) == NGINX_STATES
        statuses, retry_after = at_once(20, "/+api", **BOGUS_AUTH)
        assert statuses[429] >= 10 and retry_after == {"6"}, statuses
        assert at_once(20, "/+api", Accept="application/json")[0] == Counter({200: 20})  # no credentials

        # This test's address exempt: neither limit applies (its logins may be used up by the test before).
        exposed.apply(pillar(exposed.deb, limits={**SMALL_LIMITS, "exempt": [BRIDGE_ADDRESS]}))
        assert 429 not in at_once(20, "/+api", **BOGUS_AUTH)[0]
        assert 429 not in wrong_logins(3)[0]
        # A replica's address alike: replication is never limited.
        exposed.apply(pillar(exposed.deb, limits=SMALL_LIMITS, replica_addresses=[BRIDGE_ADDRESS]))
        assert 429 not in at_once(20, "/+api", **BOGUS_AUTH)[0]
    finally:
        exposed.apply(pillar(exposed.deb))


def test_behind_a_trusted_proxy_the_client_it_names_is_limited(exposed):
    """This test plays the balancer: its X-Forwarded-For names the client that limits and exemptions apply to."""
    try:
        limits = {**SMALL_LIMITS, "trusted_proxies": [BRIDGE_ADDRESS], "exempt": ["192.0.2.7"]}
        exposed.apply(pillar(exposed.deb, limits=limits))
        assert 429 not in at_once(20, "/+api", **BOGUS_AUTH, **{"X-Forwarded-For": "192.0.2.7"})[0]
        assert at_once(20, "/+api", **BOGUS_AUTH, **{"X-Forwarded-For": "192.0.2.8"})[0][429] >= 10
    finally:
        exposed.apply(pillar(exposed.deb))


def test_the_front_limits_its_clients_too(exposed):
    with_front = pillar(exposed.deb, limits=SMALL_LIMITS)
    with_front["sentry"]["front"] = {"master": "127.0.0.1:80", "port": 8080}
    exposed.apply(with_front, "sentry.front")
    try:
        statuses, retry_after = at_once(20, "/+api", port=8080, **BOGUS_AUTH)
        assert statuses[429] >= 10 and retry_after == {"6"}, statuses
        statuses, retry_after = wrong_logins(15, port=8080)
        assert statuses[429] >= 1 and retry_after == {"6"}, statuses
    finally:
        exposed.apply(with_front, "sentry.front.clean")
        exposed.salt.set_pillar(pillar(exposed.deb))


def counted_pillar(exposed, lockdown: bool = False) -> dict:
    """Failed credentials counted strictly, this process a trusted proxy naming its clients, 192.0.2.7 exempt."""
    counted = pillar(exposed.deb, limits={"trusted_proxies": [BRIDGE_ADDRESS], "exempt": ["192.0.2.7"]})
    counted["sentry"]["auth"] = {
        "lockdown": lockdown,
        "failed_credentials": {"limit": 4, "window_seconds": 60, "ban_seconds": 8},
    }
    return counted


def logins_as(client: str, count: int, password: str = WRONG_PASSWORD) -> tuple[list[int], set[str]]:
    """``count`` root logins one after another from ``client`` (X-Forwarded-For): statuses, Retry-After of 429s."""
    statuses, retry_after = [], set()
    body = json.dumps({"user": "root", "password": password}).encode()
    for _ in range(count):
        request = urllib.request.Request(
            f"http://{ADDRESS}/+login",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", "X-Forwarded-For": client},
        )
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as answer:
                statuses.append(answer.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
            if error.code == 429:
                retry_after.add(error.headers["Retry-After"])
                assert b"too many failed logins" in error.read()
    return statuses, retry_after


def test_an_address_with_too_many_failed_logins_is_refused_for_a_while_even_with_the_right_password(exposed):
    try:
        exposed.apply(counted_pillar(exposed))
        statuses, retry_after = logins_as("192.0.2.50", 6)
        assert statuses == [401, 401, 401, 401, 429, 429], statuses  # the server's count, not nginx's limit
        assert len(retry_after) == 1 and 1 <= int(retry_after.pop()) <= 8
        assert logins_as("192.0.2.50", 1, ROOT_PASSWORD)[0] == [429]
        assert logins_as("192.0.2.51", 1, ROOT_PASSWORD)[0] == [200]  # another client: never
        assert logins_as("192.0.2.7", 6)[0] == [401] * 6  # exempt: never counted
        assert log_in(exposed.host, "http://127.0.0.1", "root", ROOT_PASSWORD)[0] == 200  # loopback: never
        log = exposed.host.path("/var/log/sentry/sentry-server.log").read_text()
        assert "192.0.2.50 refused for 8 s: 4 failed logins within 60 s" in log
        time.sleep(9)
        assert logins_as("192.0.2.50", 1, ROOT_PASSWORD)[0] == [200]  # the refusal is over
    finally:
        exposed.apply(pillar(exposed.deb))


def test_under_lockdown_wrong_credentials_count_too_and_nginx_answers_429(exposed):
    """Wrong Basic credentials on a read cost a check through /+authcheck; once refused, nginx answers 429 with
    the server's Retry-After, not a 401 challenge."""
    try:
        exposed.apply(counted_pillar(exposed, lockdown=True))
        wrong = base64.b64encode(b"root:not-the-password").decode()
        statuses = [
            outside("/root/pypi/+simple/", Authorization=f"Basic {wrong}", **{"X-Forwarded-For": "192.0.2.60"})[0]
            for _ in range(5)
        ]
        assert statuses == [401, 401, 401, 401, 429], statuses
        request = urllib.request.Request(
            f"http://{ADDRESS}/root/pypi/+simple/",
            headers={"Authorization": f"Basic {wrong}", "X-Forwarded-For": "192.0.2.60"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30)
        assert refused.value.code == 429 and 1 <= int(refused.value.headers["Retry-After"]) <= 8
        assert b"too many failed logins" in refused.value.read()
    finally:
        exposed.apply(pillar(exposed.deb))


def test_the_front_serves_https_and_reaches_tls_nodes_over_tls(exposed):
    """The node serves HTTPS only (plain HTTP redirects); the front terminates TLS for clients (8443) and reaches
    the node over TLS, checking its certificate against the CA in pillar; pages link to https://."""
    host = exposed.host
    host.sh(MAKE_CERTIFICATES.format(root="/etc/ssl/sentry-exposure", address="sentry.test", san="DNS:sentry.test"))
    host.sh(
        "mkdir -p /etc/ssl/other-ca && cd /etc/ssl/other-ca && openssl req -x509 -newkey rsa:2048 -nodes "
        "-days 2 -subj '/CN=another CA' -keyout ca.key -out ca.pem 2>/dev/null"
    )
    tls = "/etc/ssl/sentry-exposure/tls"
    secured = pillar(exposed.deb, tls={"enabled": True, "cert": f"{tls}/server.pem", "key": f"{tls}/server.key"})
    secured["sentry"]["front"] = {
        "master": "127.0.0.1:443",
        "port": 8080,
        "tls": {"enabled": True, "port": 8443, "cert": f"{tls}/server.pem", "key": f"{tls}/server.key"},
        "nodes_tls": {"enabled": True, "server_name": "sentry.test", "ca_file": f"{tls}/ca.pem"},
    }
    try:
        exposed.apply(secured)
        exposed.apply(secured, "sentry.front")
        # This process trusts the test CA for the front's certificate (sentry.test, at the host's address).
        context = ssl.create_default_context(cafile=str(host.path(f"{tls}/ca.pem")))
        context.check_hostname = False
        request = urllib.request.Request(f"https://{ADDRESS}:8443/+api", headers={"Accept": "application/json"})
        with urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        ).open(request, timeout=30) as answer:
            assert answer.status == 200
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            api = json.loads(answer.read())["result"]
        assert api["login"] == f"https://{ADDRESS}:8443/+login", api  # the node links as clients see it
        # Both offer what Mozilla's intermediate profile allows, as a scanner from outside finds it.
        assert_mozilla_intermediate(f"{ADDRESS}:443")
        assert_mozilla_intermediate(f"{ADDRESS}:8443")
        # Plain HTTP only redirects, on the front and on the node: the front's 200 came over TLS.
        for plain in ("http://127.0.0.1:8080/+api", "http://127.0.0.1/+api"):
            status = host.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", plain]).stdout
            assert status == "301", (plain, status)
        # A CA that did not sign the node's certificate: the front refuses the node.
        secured["sentry"]["front"]["nodes_tls"]["ca_file"] = "/etc/ssl/other-ca/ca.pem"
        exposed.apply(secured, "sentry.front")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            ).open(request, timeout=30)
        assert refused.value.code == 502
    finally:
        exposed.apply(secured, "sentry.front.clean")
        exposed.apply(pillar(exposed.deb))
