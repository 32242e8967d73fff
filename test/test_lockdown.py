"""Reads only for logged-in users: sentry:auth:lockdown on a master, its replica and its front (issue 16).

Three test hosts: a directory (slapd, test/support/directory.py) with carol
in the group uploaders; a master whose nginx asks the server about every
request (devpi-lockdown's /+authcheck), with sentry.front on port 8080 in
front of it and the replica; and the replica, following the master through
the master's nginx. Logins come from the directory on both nodes. carol
uploads to team/dev (``acl_upload: [":uploaders"]``) through the master.

- anonymous clients get no simple page and no release file (not even the
  one nginx would read from disk): 401 with a Basic challenge and a line
  saying why, and pip fails saying 401; a browser is sent to the login page,
  which answers;
- carol's pip installs with her directory password in the index URL,
  through the front and from the replica; a wrong password is refused;
- the replica copies the upload through the locked master, and the
  upgrade orchestration's wait for a replica (sentry_upgrade.wait_synced,
  reading the master's /+status through its nginx) works;
- tokens (devpi-tokens): carol's token limited to pkg_read on team/dev
  installs from it and not from team/prod's; CI's own user (named in
  acl_upload) uploads with a token made by sentry_admin.token_create (in a 0600
  file, not in Salt's output), which installs nothing once revoked by
  sentry_admin.token_delete; carol's token, which carries no directory group,
  may not upload where only her group may;
- in a real browser (headless Chromium, on this machine, over the bridge):
  an index's address leads to the themed login page (screenshot: the
  theme's colours are on it), carol's login leads back to the index, and
  every page the theme draws says sentry, never devpi (window title,
  header, breadcrumb);
- a second apply changes nothing on either node.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.browser import Browser, png_colours
from support.client import pip_install, sentry_client
from support.cluster import no_route_out
from support.directory import BIND_DN, GROUPS, PEOPLE, Directory, Person
from support.host_roots import new_host
from support.hosts import TestHost, host_address
from support.masterless import MasterlessSalt
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

DIRECTORY_NUMBER, MASTER_NUMBER, REPLICA_NUMBER = 61, 62, 63  # below 120: + the shard offset (10, 130) stays unique
ROOT_PASSWORD = "Lock-Root-pw-59"
TEAM_PASSWORD = "Lock-Team-pw-61"
CI_PASSWORD = "Lock-Ci-pw-71"
BIND_PASSWORD = "Lock-Bind-pw-67"
SECRET = secrets.token_urlsafe(32)
CAROL = Person("carol", "Carol-lock-pw-1")
FRONT_PORT = 8080
WHEEL = ("lock-probe", "1.0")
THEME_TITLE = "sentry"  # sentry:theme:title's default
THEME_BLUE = (31, 78, 121)  # #1f4e79: the login form's border and button in the theme's style.css
SERVERDIR = "/var/lib/sentry/data"
AUTH_CACHE = "/var/cache/nginx/sentry-auth"
AUTH_CACHE_SECONDS = 10  # the master's; the replica keeps the default (60)


def auth_pillar(directory: Directory) -> dict:
    return {
        "lockdown": True,
        "ldap": {
            "urls": [directory.url],
            "user_search": {"base": PEOPLE, "filter": "(uid={username})"},
            "group_search": {"base": GROUPS},
            "bind_dn": BIND_DN,
            "bind_password": BIND_PASSWORD,
        },
    }


def node_pillars(deb: Path, directory: Directory, master: str, replica: str) -> dict[str, dict]:
    package = {"source": "deb", "deb": str(deb)}
    return {
        "master": {
            "sentry": {
                "package": package,
                "server": {"root_password": ROOT_PASSWORD, "role": "primary", "secret": SECRET, "no_root_pypi": True},
                "nginx": {"replica_addresses": [replica]},
                "auth": {**auth_pillar(directory), "lockdown_cache_seconds": AUTH_CACHE_SECONDS},
                "front": {"master": "127.0.0.1:80", "replicas": [f"{replica}:80"], "port": FRONT_PORT},
                "bootstrap": {
                    "users": {"team": {"password": TEAM_PASSWORD}, "ci": {"password": CI_PASSWORD}},
                    "indexes": {
                        # Tokens carry no directory groups: CI uploads as a user of its own.
                        "team/dev": {"bases": [], "acl_upload": [":uploaders", "ci"]},
                        "team/prod": {"bases": [], "acl_upload": [":uploaders"]},
                    },
                },
            }
        },
        "replica": {
            "sentry": {
                "package": package,
                "server": {"master_url": f"http://{master}", "secret": SECRET},
                "auth": auth_pillar(directory),
            }
        },
    }


@dataclass
class Answer:
    status: int
    headers: str
    body: str


def fetch(host: TestHost, url: str, *headers: str) -> Answer:
    """One GET from inside ``host`` with curl, following no redirect."""
    options = [option for header in headers for option in ("-H", header)]
    host.run(["curl", "-sS", "-D", "/tmp/headers", "-o", "/tmp/body", *options, url])
    head = host.path("/tmp/headers").read_text()
    return Answer(int(head.split()[1]), head.lower(), host.path("/tmp/body").read_text(errors="replace"))


@dataclass
class Locked:
    master: TestHost
    replica: TestHost
    salts: dict[str, MasterlessSalt]
    file_path: str  # the uploaded wheel's /team/dev/+f/... path

    def carols_index(self, host: str) -> str:
        return f"http://{CAROL.uid}:{CAROL.password}@{host}/team/dev/+simple/"


@pytest.fixture(scope="module")
def locked(sentry_deb, tmp_path_factory):
    with (
        new_host("lock-dir", address=host_address(DIRECTORY_NUMBER)) as directory_host,
        new_host("lock-master", address=host_address(MASTER_NUMBER)) as master,
        new_host("lock-replica", address=host_address(REPLICA_NUMBER)) as replica,
    ):
        for each in (directory_host, master, replica):
            no_route_out(each)
        directory = Directory(directory_host, [CAROL], {"uploaders": [CAROL.uid]}, BIND_PASSWORD).start()
        pillars = node_pillars(sentry_deb, directory, master.address, replica.address)
        salts = {name: MasterlessSalt(host, pillars[name]) for name, host in (("master", master), ("replica", replica))}
        for name, sls in (("master", "sentry"), ("master", "sentry.front"), ("replica", "sentry")):
            applied = salts[name].apply(sls)
            assert applied.succeeded, (name, sls, applied.failed or applied.errors)
        wheel = make_wheel(tmp_path_factory.mktemp("lock-wheels"), *WHEEL)
        master.path("/tmp").joinpath(wheel.name).write_bytes(wheel.read_bytes())
        sentry_client(master, "use", "http://127.0.0.1/team/dev")
        sentry_client(master, "login", CAROL.uid, password=CAROL.password)
        sentry_client(master, "upload", f"/tmp/{wheel.name}")
        project = json.loads(sentry_client(master, "getjson", f"/team/dev/{WHEEL[0]}").stdout)
        (link,) = project["result"][WHEEL[1]]["+links"]
        file_path = "/" + link["href"].split("/", 3)[3]
        yield Locked(master, replica, salts, file_path)


def test_anonymous_clients_get_no_page_and_no_file_and_are_told_why(locked):
    master = locked.master
    assert master.path(f"{SERVERDIR}/+files{locked.file_path}").exists()  # nginx could serve it from disk
    for path in ("/team/dev/+simple/", f"/team/dev/+simple/{WHEEL[0]}/", locked.file_path):
        answer = fetch(master, f"http://127.0.0.1{path}")
        assert answer.status == 401, (path, answer)
        assert 'www-authenticate: basic realm="sentry"' in answer.headers, answer.headers
        assert "reads need a login" in answer.body
    refused = pip_install(master, "http://127.0.0.1/team/dev/+simple/", WHEEL[0], "/tmp/anonymous", check=False)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr, refused.stdout + refused.stderr


def test_a_browser_is_sent_to_the_login_page(locked):
    master = locked.master
    browser = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    sent = fetch(master, "http://127.0.0.1/team/dev", browser)
    assert sent.status == 302, sent
    assert "location: http://127.0.0.1/+login?goto_url=/team/dev" in sent.headers, sent.headers
    page = fetch(master, "http://127.0.0.1/+login", browser)
    assert page.status == 200 and "password" in page.body.lower(), page


def test_carol_installs_with_her_password_through_the_front_and_from_the_replica(locked):
    master, replica = locked.master, locked.replica
    replica.wait_for(f"test -f {SERVERDIR}/+files{locked.file_path}", timeout=90)  # replicated through the lock
    # The upgrade orchestration's one read across nodes: a replica's wait for its master (/+status, through
    # the master's locked nginx; every other step talks to the node's own server).
    synced = json.loads(locked.salts["replica"].call("sentry_upgrade.wait_synced", "timeout=60").stdout)["local"]
    assert synced["up"] and synced["role"] == "replica", synced
    for where, host, index_host in (
        ("front", master, f"127.0.0.1:{FRONT_PORT}"),
        ("replica", replica, "127.0.0.1"),
    ):
        pip_install(host, locked.carols_index(index_host), WHEEL[0], f"/tmp/installed-{where}")
        assert host.path(f"/tmp/installed-{where}/lock_probe/__init__.py").exists(), where
    wrong = f"http://{CAROL.uid}:not-her-password@127.0.0.1/team/dev/+simple/"
    refused = pip_install(replica, wrong, WHEEL[0], "/tmp/wrong", check=False)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr


def make_token(host: TestHost, user: str, output: str, *restrictions: str) -> str:
    """A token of ``user``, made by root (devpi-tokens' token-create: with server:restrict_modify at its
    default, users may not make their own), written to ``output`` inside ``host``."""
    sentry_client(host, "use", "http://127.0.0.1/team/dev")
    sentry_client(host, "login", "root", password=ROOT_PASSWORD)
    sentry_client(host, "token-create", "-u", user, "-e", "1h", "-o", output, *restrictions)
    return host.path(output).read_text().strip()


def test_tokens_limited_to_an_index_install_and_upload(locked, tmp_path):
    master = locked.master
    reads_dev = make_token(master, CAROL.uid, "/tmp/carol-dev.token", "-a", "pkg_read", "-i", "team/dev")
    pip_install(master, f"http://carol:{reads_dev}@127.0.0.1/team/dev/+simple/", WHEEL[0], "/tmp/by-token")
    assert master.path("/tmp/by-token/lock_probe/__init__.py").exists()
    reads_prod = make_token(master, CAROL.uid, "/tmp/carol-prod.token", "-a", "pkg_read", "-i", "team/prod")
    assert read_status(master, "/team/prod/+simple/", CAROL.uid, reads_prod) == 200  # where it is meant to read
    # carol is known (the token is valid), the index is not the token's: forbidden, not unauthenticated
    assert read_status(master, "/team/dev/+simple/", CAROL.uid, reads_prod) == 403
    other = pip_install(
        master, f"http://carol:{reads_prod}@127.0.0.1/team/dev/+simple/", WHEEL[0], "/tmp/other", check=False
    )
    # pip takes a 403 for "nothing there" (the status above is the server's word)
    assert other.returncode != 0 and "No matching distribution" in other.stderr, "a token for team/prod read team/dev"

    # CI's own user, named in acl_upload, uploads with a token limited to team/dev, made through Salt
    # (sentry_admin.token_create): the token goes to a file only root reads, never into Salt's output.
    made = locked.salts["master"].call(
        "sentry_admin.token_create", "ci", "/tmp/ci.token", "indexes=team/dev", "allowed=upload,pkg_read", "expires=1h"
    )
    uploads = master.path("/tmp/ci.token").read_text().strip()
    assert uploads.startswith("devpi-") and uploads not in made.stdout + made.stderr
    assert master.run(["stat", "-c", "%a", "/tmp/ci.token"]).stdout.strip() == "600"
    token_id = json.loads(made.stdout)["local"]["id"]
    assert token_id in json.loads(locked.salts["master"].call("sentry_admin.token_list", "ci").stdout)["local"]
    wheel = make_wheel(tmp_path, "lock-by-token", "1.0")
    master.path("/tmp").joinpath(wheel.name).write_bytes(wheel.read_bytes())
    sentry_client(master, "logoff")
    sentry_client(master, "token-login", "-f", "/tmp/ci.token")
    sentry_client(master, "upload", f"/tmp/{wheel.name}")
    pip_install(master, f"http://ci:{uploads}@127.0.0.1/team/dev/+simple/", "lock-by-token", "/tmp/by-ci")
    # Revoked, it installs nothing more: at once where nginx has kept none of its checks, else within
    # auth:lockdown_cache_seconds.
    revoked = locked.salts["master"].call("sentry_admin.token_delete", "ci", token_id)
    assert json.loads(revoked.stdout)["local"] is True
    deadline = time.monotonic() + AUTH_CACHE_SECONDS + 5
    while read_status(master, "/team/dev/+simple/lock-by-token/", "ci", uploads) == 200:
        assert time.monotonic() < deadline, "a revoked token is still taken"
        time.sleep(1)
    refused = pip_install(
        master, f"http://ci:{uploads}@127.0.0.1/team/dev/+simple/", "lock-by-token", "/tmp/revoked", check=False
    )
    assert refused.returncode != 0 and "No matching distribution" in refused.stderr, "a revoked token still reads"
    assert read_status(master, "/team/dev/+simple/", "ci", uploads) == 403  # a known user, a token no more
    sentry_client(master, "logoff")  # the client still holds the revoked token: every request would be refused
    # carol's token carries no group: her upload to team/dev (uploaders) is refused, as docs/access.md says.
    carols = make_token(master, CAROL.uid, "/tmp/carol-up.token", "-a", "upload", "-i", "team/dev")
    assert carols
    sentry_client(master, "logoff")
    sentry_client(master, "token-login", "-f", "/tmp/carol-up.token")
    other_wheel = make_wheel(tmp_path, "lock-carol-token", "1.0")
    master.path("/tmp").joinpath(other_wheel.name).write_bytes(other_wheel.read_bytes())
    refused = sentry_client(master, "upload", f"/tmp/{other_wheel.name}", check=False)
    assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    # ... and nothing of it reached the index
    assert read_status(master, "/team/dev/+simple/lock-carol-token/", CAROL.uid, CAROL.password) == 404


def read_status(host: TestHost, path: str, user: str, password: str) -> int:
    """The HTTP status of a GET of ``path`` through the host's nginx as ``user`` (curl's config on its stdin)."""
    return int(
        host.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-K", "-", f"http://127.0.0.1{path}"],
            input=f'user = "{user}:{password}"\n',
        ).stdout
    )


def checked_read(host: TestHost, path: str, user: str, password: str) -> tuple[int, str]:
    """A GET of ``path`` through the host's nginx as ``user``: the status and X-Sentry-Auth-Cache (HIT: nginx
    took the password without asking the server)."""
    answered = host.run(
        ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-K", "-", f"http://127.0.0.1{path}"],
        input=f'user = "{user}:{password}"\n',
    ).stdout
    status = int(answered.split()[1])
    cache = re.search(r"^x-sentry-auth-cache: *(\S*)", answered, re.IGNORECASE | re.MULTILINE)
    return status, cache.group(1) if cache else ""


def test_a_password_check_is_kept_a_while_never_a_failure_nor_a_token(locked):
    master = locked.master
    dev = "/team/dev/+simple/"
    answers = [checked_read(master, dev, "team", TEAM_PASSWORD) for _ in range(3)]
    assert answers == [(200, "MISS"), (200, "HIT"), (200, "HIT")]
    # Per index and kind of path: the file is checked once of its own, then kept too, also as pip asks for it
    # (it writes the '+' as %2B).
    assert [checked_read(master, locked.file_path, "team", TEAM_PASSWORD)[1] for _ in range(2)] == ["MISS", "HIT"]
    as_pip_asks = locked.file_path.replace("/+f/", "/%2Bf/")
    assert checked_read(master, as_pip_asks, "team", TEAM_PASSWORD) == (200, "HIT")
    assert checked_read(master, as_pip_asks.replace("/team/", "/%74eam/"), "team", TEAM_PASSWORD)[1] == "BYPASS"
    # Never a failure, never another kind of path; a token (its limits depend on the path) per path.
    stored = set(master.run(["find", AUTH_CACHE, "-type", "f"]).stdout.split())
    assert stored  # the page's and the file's (unless already expired)
    assert {checked_read(master, dev, "team", "not-the-password")[0] for _ in range(2)} == {401}
    assert set(master.run(["find", AUTH_CACHE, "-type", "f"]).stdout.split()) <= stored  # nothing kept of them
    token = make_token(master, CAROL.uid, "/tmp/carol-cache.token", "-a", "pkg_read", "-i", "team/dev")
    sentry_client(master, "logoff")
    assert [checked_read(master, dev, CAROL.uid, token) for _ in range(2)] == [(200, "MISS"), (200, "HIT")]
    assert checked_read(master, f"{dev}{WHEEL[0]}/", CAROL.uid, token) == (200, "MISS")
    assert checked_read(master, "/team/dev/", "team", TEAM_PASSWORD)[1] == "BYPASS"
    # What lies on disk: HMACs and answers, never the password nor the header carrying it.
    header = base64.b64encode(f"team:{TEAM_PASSWORD}".encode()).decode()
    leaked = master.run(["grep", "-rlF", "-e", TEAM_PASSWORD, "-e", header, AUTH_CACHE], check=False)
    assert leaked.returncode == 1, leaked.stdout
    assert master.run(["stat", "-c", "%a %U", "/etc/nginx/sentry-auth-key.conf"]).stdout.split() == ["600", "root"]

    # A changed password: the old one is taken at most lockdown_cache_seconds more, then refused.
    sentry_client(master, "login", "root", password=ROOT_PASSWORD)
    assert checked_read(master, dev, "team", TEAM_PASSWORD)[0] == 200
    try:
        sentry_client(master, "user", "-m", "team", password="Lock-Team-new-pw-62")
        changed = time.monotonic()
        assert checked_read(master, dev, "team", "Lock-Team-new-pw-62") == (200, "MISS")
        while checked_read(master, dev, "team", TEAM_PASSWORD)[0] == 200:
            assert time.monotonic() - changed < AUTH_CACHE_SECONDS + 5, "the old password is still taken"
            time.sleep(1)
        assert checked_read(master, dev, "team", TEAM_PASSWORD)[0] == 401
    finally:
        sentry_client(master, "user", "-m", "team", password=TEAM_PASSWORD)
        sentry_client(master, "logoff")


def assert_says_sentry(browser: Browser, page: str) -> None:
    """The page names itself as the theme does: window title, header and the breadcrumb's first step."""
    assert browser.title.startswith(THEME_TITLE) and "devpi" not in browser.title.lower(), (page, browser.title)
    assert browser.text("h1.sentry-theme") == THEME_TITLE, page
    assert browser.text("#navigation a") == THEME_TITLE, page


def test_a_browser_logs_in_on_the_themed_page_and_lands_on_the_index(locked, tmp_path):
    site = f"http://{locked.master.address}"
    with Browser([locked.master.address]) as browser:
        browser.open(f"{site}/team/dev/")
        assert browser.url == f"{site}/+login?goto_url=/team/dev/"
        assert browser.title == f"{THEME_TITLE} - Log in"
        assert_says_sentry(browser, "login")
        assert png_colours(browser.screenshot(tmp_path / "login.png"))[THEME_BLUE] > 2000, "the theme's style is not on"

        browser.type("#username", CAROL.uid)
        browser.type("#password", "not-her-password")
        browser.click("button[name=submit]")
        browser.wait_until(lambda: "Invalid credentials" in browser.text("#content"), "the login refused")
        assert browser.url == f"{site}/+login?goto_url=/team/dev/"

        browser.type("#username", CAROL.uid)
        browser.type("#password", CAROL.password)
        browser.click("button[name=submit]")
        browser.wait_for_url(f"{site}/team/dev")
        browser.wait_until(lambda: WHEEL[0] in browser.text("#content"), "the index page lists the wheel")
        browser.screenshot(tmp_path / "index.png")
        assert "devpi" not in browser.title.lower() and browser.text("#navigation a") == THEME_TITLE

        for page, title in (
            ("/", THEME_TITLE),
            ("/team", f"{THEME_TITLE} - team"),
            ("/team/no-such-index/", f"{THEME_TITLE} - Not Found"),
            ("/+searchhelp", f"{THEME_TITLE} - How to search"),
            ("/+logout", f"{THEME_TITLE} - Log out"),
        ):
            browser.open(site + page)
            assert browser.title == title, page
            assert_says_sentry(browser, page)
        browser.open(f"{site}/")
        assert "team/dev" in browser.text("table.sentry-indexes")


def test_a_second_apply_changes_nothing(locked):
    for name, sls in (("master", "sentry"), ("master", "sentry.front"), ("replica", "sentry")):
        again = locked.salts[name].apply(sls)
        assert again.succeeded and not again.changed, (name, sls, again.changed)
