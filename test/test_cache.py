"""nginx keeps a mirror's simple pages, and nothing it must not (issue 15).

One sentry host whose root/pypi mirrors an upstream test host, with
alice/dev (bases root/pypi) for her own uploads, and the front
(sentry.front) on the same host on another port, in front of the host's
nginx. From inside the host, with curl and the sentry client:

- a mirror page is answered by nginx after the first request (the server
  logs one request however many clients ask), HTML and PEP 691 JSON each as
  asked, and is kept no longer than the mirror's cache expiry (shorter
  here than nginx:cache:seconds);
- requests with credentials, and writes, always reach the server;
- a page of alice/dev shows a new upload at the very next request, through
  the host's nginx and through the front;
- a 100 MB wheel uploads through the front, and one over the limit gets 413
  from nginx without reaching the server, whose own limit is the same;
- the server runs with the pillar's --threads; a second apply changes nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.client import sentry_client
from support.cluster import no_route_out
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt, StateRun
from support.upstream import LogTail, Upstream, server_requests, upstream_wheels
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

UPSTREAM_NUMBER, SENTRY_NUMBER = 105, 106  # beside test_mirror's 100-104
ROOT_PASSWORD = "Cache-Root-pw-58"
ALICE_PASSWORD = "Cache-Alice-pw-31"
CACHE_EXPIRY = 8  # the mirror's; nginx:cache:seconds says more, nginx keeps pages this long
FRONT_PORT = 8080
SERVER_LOG = "/var/log/sentry/sentry-server.log"
PAGE = "/root/pypi/+simple/six/"
JSON = "application/vnd.pypi.simple.v1+json"
BODY_LIMIT = "110M"
UPLOADED_BYTES = 100 * 1000 * 1000  # a 100 MB wheel's data, under the limit
REFUSED_BYTES = 120 * 1024 * 1024  # over it


def cache_pillar(deb: Path, upstream: Upstream) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "role": "primary", "threads": 20},
            "mirror": {
                "url": upstream.url,
                "cache_expiry": CACHE_EXPIRY,
                "ca_certificates": upstream.ca_certificates(),
            },
            "nginx": {"client_max_body_size": BODY_LIMIT, "cache": {"seconds": 600}},
            "front": {"master": "127.0.0.1:80", "port": FRONT_PORT},
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD, "email": "alice@example.org"}},
                "indexes": {"alice/dev": {"bases": ["root/pypi"], "acl_upload": ["alice"]}},
            },
        }
    }


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def cache(self) -> str:
        """What nginx did with the request: MISS, HIT, EXPIRED, BYPASS, ...; '' where it keeps nothing."""
        return self.headers.get("x-sentry-cache", "")


def fetch(host: TestHost, url: str, *headers: str, method: str = "GET") -> Answer:
    """One request from inside the host, with curl (no proxy, no credentials unless given)."""
    options = [option for header in headers for option in ("-H", header)]
    host.run(["curl", "-sS", "--noproxy", "*", "-X", method, "-D", "/tmp/headers", "-o", "/tmp/body", *options, url])
    lines = host.path("/tmp/headers").read_text().splitlines()
    status = int(lines[0].split()[1])
    pairs = [line.split(":", 1) for line in lines[1:] if ":" in line]
    body = host.path("/tmp/body").read_text(errors="replace")
    return Answer(status, {key.strip().lower(): value.strip() for key, value in pairs}, body)


@dataclass
class Deployment:
    host: TestHost
    salt: MasterlessSalt
    applied: tuple[StateRun, StateRun]

    def log(self) -> LogTail:
        return LogTail(self.host, SERVER_LOG)

    def login_header(self, user: str, password: str) -> str:
        body = json.dumps({"user": user, "password": password})
        self.host.path("/tmp/login.json").write_text(body)
        completed = self.host.run(
            [
                "curl",
                "-sS",
                "--noproxy",
                "*",
                "-H",
                "Accept: application/json",
                "-X",
                "POST",
                "--data-binary",
                "@/tmp/login.json",
                "http://127.0.0.1/+login",
            ]
        )
        token = json.loads(completed.stdout)["result"]["password"]
        return "X-Devpi-Auth: " + base64.b64encode(f"{user}:{token}".encode()).decode()

    def upload(self, base_url: str, wheel: Path, check: bool = True):
        """alice uploads ``wheel`` to alice/dev at ``base_url`` with the sentry client."""
        shutil.copy(wheel, self.host.path("/tmp") / wheel.name)
        sentry_client(self.host, "use", base_url)
        sentry_client(self.host, "login", "alice", password=ALICE_PASSWORD)
        sentry_client(self.host, "use", "alice/dev")
        return sentry_client(self.host, "upload", f"/tmp/{wheel.name}", check=check)


@pytest.fixture(scope="module")
def upstream():
    with new_host("cache-up", address=host_address(UPSTREAM_NUMBER)) as host:
        no_route_out(host)
        upstream = Upstream(host, upstream_wheels()).start()
        upstream.serve()
        yield upstream


@pytest.fixture(scope="module")
def deployment(sentry_deb, upstream):
    with new_host("cache", address=host_address(SENTRY_NUMBER)) as host:
        no_route_out(host)
        salt = MasterlessSalt(host, cache_pillar(sentry_deb, upstream))
        node = salt.apply("sentry")
        assert node.succeeded, node.failed or node.errors
        front = salt.apply("sentry.front")
        assert front.succeeded, front.failed or front.errors
        yield Deployment(host, salt, (node, front))


def test_a_mirror_page_reaches_the_server_once_however_many_ask(deployment):
    host, log = deployment.host, deployment.log()
    url = f"http://127.0.0.1{PAGE}"
    first = fetch(host, url)
    assert first.status == 200 and "six-1.17.0" in first.body and first.cache == "MISS", first
    answers = [fetch(host, url) for _ in range(20)]
    assert {(answer.status, answer.cache) for answer in answers} == {(200, "HIT")}
    assert {answer.body for answer in answers} == {first.body}
    assert [request for request in server_requests(log.new()) if PAGE in request] == [f"GET {PAGE}"]

    # PEP 691 JSON is kept apart from HTML: each client gets the format it asked for.
    as_json = [fetch(host, url, f"Accept: {JSON}") for _ in range(2)]
    assert [answer.cache for answer in as_json] == ["MISS", "HIT"], [answer.headers for answer in as_json]
    assert all(answer.headers["content-type"].startswith(JSON) for answer in as_json), as_json
    assert json.loads(as_json[1].body)["name"] == "six"
    html = fetch(host, url)
    assert html.cache == "HIT" and html.headers["content-type"].startswith("text/html"), html

    # The front keeps them too (its own status; the node's is not passed on).
    via_front = [fetch(host, f"http://127.0.0.1:{FRONT_PORT}{PAGE}") for _ in range(2)]
    assert [answer.cache for answer in via_front] == ["MISS", "HIT"], via_front
    assert "six-1.17.0-py2.py3-none-any.whl" in via_front[1].body


def test_a_mirror_page_is_kept_no_longer_than_the_mirrors_cache_expiry(deployment):
    host = deployment.host
    url = f"http://127.0.0.1{PAGE}"
    site = host.path("/etc/nginx/sites-available/sentry.conf").read_text()
    assert f"proxy_cache_valid 200 {CACHE_EXPIRY}s;" in site  # the expiry, not nginx:cache:seconds' 600
    fetch(host, url)  # kept from now on (or from earlier)
    time.sleep(CACHE_EXPIRY + 1)
    log = deployment.log()
    again = fetch(host, url)
    assert again.cache in ("EXPIRED", "MISS") and again.status == 200, again
    assert f"GET {PAGE}" in server_requests(log.new())


def test_credentials_and_writes_always_reach_the_server(deployment):
    host = deployment.host
    url = f"http://127.0.0.1{PAGE}"
    fetch(host, url)
    alice = deployment.login_header("alice", ALICE_PASSWORD)
    basic = "Authorization: Basic " + base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode()
    for header in (alice, basic):
        log = deployment.log()
        answer = fetch(host, url, header)
        assert answer.status == 200 and answer.cache == "BYPASS", answer
        assert f"GET {PAGE}" in server_requests(log.new()), header.split(":")[0]
    log = deployment.log()
    written = fetch(host, url, method="POST")
    assert written.cache == "", written
    assert f"POST {PAGE}" in server_requests(log.new())


@pytest.mark.parametrize("way", ["nginx", "front"])
def test_a_private_page_shows_an_upload_at_the_next_request(deployment, tmp_path, way):
    base_url = f"http://127.0.0.1{'' if way == 'nginx' else f':{FRONT_PORT}'}/"
    page = f"{base_url}alice/dev/+simple/cache-probe-{way}/"
    for number, version in enumerate(("1.0", "1.1")):
        wheel = make_wheel(tmp_path, f"cache-probe-{way}", version, payload=version)
        before = [fetch(deployment.host, page) for _ in range(3)]  # asked often, as a CI storm does
        assert all(answer.cache == "" for answer in before), before
        deployment.upload(base_url, wheel)
        after = fetch(deployment.host, page)
        assert after.status == 200 and wheel.name in after.body, (way, number, after.body[-500:])


def test_a_100_mb_wheel_uploads_through_the_front_and_a_bigger_one_gets_413(deployment, tmp_path):
    host = deployment.host
    args = host.run(["ps", "-eo", "args"]).stdout
    assert f"--max-request-body-size {110 * 1024 * 1024}" in args and "--threads 20" in args
    assert "--connection-limit" not in args  # devpi's default: left out

    big = make_wheel(tmp_path, "cache-big", "1.0", data=os.urandom(UPLOADED_BYTES))
    deployment.upload(f"http://127.0.0.1:{FRONT_PORT}/", big)
    served = fetch(host, f"http://127.0.0.1:{FRONT_PORT}/alice/dev/+simple/cache-big/")
    assert big.name in served.body

    too_big = make_wheel(tmp_path, "cache-too-big", "1.0", data=os.urandom(REFUSED_BYTES))
    for port in (FRONT_PORT, 80):
        log = deployment.log()
        refused = deployment.upload(f"http://127.0.0.1:{port}/", too_big, check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "413" in said, (port, said)
        assert not [request for request in server_requests(log.new()) if request.startswith("POST /alice/dev")], port


def test_reapply_changes_nothing(deployment):
    for sls in ("sentry", "sentry.front"):
        again = deployment.salt.apply(sls)
        assert again.succeeded and again.changed == {}, (sls, again.changed)
    fetch(deployment.host, f"http://127.0.0.1:{FRONT_PORT}{PAGE}")  # kept by the front and the node
    for folder in ("/var/cache/nginx/sentry", "/var/cache/nginx/sentry-front"):  # where the pillar says
        assert deployment.host.run(["find", folder, "-type", "f"]).stdout.split(), f"nothing kept in {folder}"
