"""`state.apply sentry` on one host: a working sentry behind nginx, under supervisor.

One test host carries a deployment through the module: apply, re-apply, use it
through nginx, kill it, change its port, add a replica beside it, clean it and
deploy again. A second, fresh host checks test=True.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
from support.client import pip_install, sentry_client
from support.formula_pillars import REPLICA_OVERRIDE, ROOT_PASSWORD, TITLE, master_pillar
from support.host_roots import new_host
from support.masterless import MasterlessSalt
from support.paths import REPO
from support.wheels import make_wheel

pytestmark = pytest.mark.slow

TOFS_ROOT = "/srv/site-states"
ALICE_PASSWORD = "Formula-Alice-pw-27"


class Deployment:
    def __init__(self, host, salt: MasterlessSalt) -> None:
        self.host, self.salt = host, salt

    def curl(self, url: str, *options: str) -> str:
        return self.host.run(["curl", "-fsS", *options, url]).stdout

    def api(self, port: int = 80) -> dict:
        return json.loads(self.curl(f"http://127.0.0.1:{port}/+api", "-H", "Accept: application/json"))

    def server_pid(self, program: str = "sentry-server") -> int:
        return int(self.host.run(["supervisorctl", "pid", program]).stdout.strip())

    def nginx_config(self) -> str:
        """Every path under /etc/nginx with its type, link target, mode and content hash."""
        return self.host.sh(
            "find /etc/nginx -printf '%p %y %l %m\\n' | sort"
            " && find /etc/nginx -type f -print0 | sort -z | xargs -0 sha256sum"
        ).stdout

    def nginx_master_pid(self) -> int:
        return int(self.host.path("/run/nginx.pid").read_text().strip())


@pytest.fixture(scope="module")
def deployment(sentry_deb):
    with new_host("formula") as host:
        host.path(TOFS_ROOT).mkdir(parents=True)
        salt = MasterlessSalt(host, master_pillar(sentry_deb), extra_file_roots=(TOFS_ROOT,))
        deployed = Deployment(host, salt)
        deployed.nginx_before = deployed.nginx_config()
        deployed.first = salt.apply("sentry")
        yield deployed


@pytest.fixture(scope="module")
def probe_wheel(tmp_path_factory):
    return make_wheel(tmp_path_factory.mktemp("formula-wheels"), "formula-probe", "2.0", payload="f" * 2048)


@pytest.fixture(scope="module")
def uploaded(deployment, probe_wheel):
    """alice/dev (bases root/pypi) with the probe wheel, uploaded through nginx with the sentry client.

    Only root makes users and indexes (server:restrict_modify); alice uploads.
    """
    host = deployment.host
    shutil.copy(probe_wheel, host.path("/tmp") / probe_wheel.name)
    sentry_client(host, "use", "http://127.0.0.1/")
    sentry_client(host, "login", "root", password=ROOT_PASSWORD)
    sentry_client(host, "user", "-c", "alice", "email=alice@example.org", password=ALICE_PASSWORD)
    sentry_client(host, "index", "-c", "alice/dev", "bases=root/pypi")
    sentry_client(host, "login", "alice", password=ALICE_PASSWORD)
    sentry_client(host, "use", "alice/dev")
    sentry_client(host, "upload", f"/tmp/{probe_wheel.name}")
    project = json.loads(deployment.curl("http://127.0.0.1/alice/dev/formula-probe", "-H", "Accept: application/json"))
    (link,) = project["result"]["2.0"]["+links"]
    return link["href"]


def test_first_apply_succeeds(deployment):
    first = deployment.first
    assert first.succeeded, first.failed or first.errors
    for state_id in (
        "sentry-package-installed",
        "sentry-user",
        "sentry-server-initialised",
        "sentry-supervisor-program-running",
        "sentry-nginx-site-file",
    ):
        assert state_id in first.changed, state_id


def test_root_password_stays_out_of_the_state_output(deployment):
    assert ROOT_PASSWORD not in deployment.first.stdout + deployment.first.stderr


def test_second_apply_changes_nothing(deployment):
    again = deployment.salt.apply("sentry")
    assert again.succeeded, again.failed
    assert again.changed == {}


def test_api_and_themed_ui_answer_through_nginx(deployment):
    assert "login" in deployment.api()["result"]
    page = deployment.curl("http://127.0.0.1/")
    assert f'<h1 class="sentry-theme"><a href="http://127.0.0.1/">{TITLE}</a></h1>' in page
    assert "style.css" in page


@pytest.mark.parametrize("accept", ["", "*/*"], ids=["no-accept", "accept-anything"])
def test_a_login_posted_by_a_script_gets_devpis_json_answer(deployment, accept):
    """Scripts written for devpi POST /+login with no Accept header (urllib) or accepting anything (curl,
    requests): the JSON answer, as plain devpi gives it (the deb's devpi-lockdown would give them its HTML
    login page); browsers still get the page."""
    credentials = json.dumps({"user": "root", "password": ROOT_PASSWORD})
    answered = deployment.host.run(
        ["curl", "-sS", "-H", f"Accept:{' ' + accept if accept else ''}", "-H", "Content-Type: application/json",
         "--data-binary", "@-", "-w", "\n%{http_code} %{content_type}", "http://127.0.0.1/+login"],
        input=credentials,
    ).stdout  # fmt: skip
    body, _, status = answered.rpartition("\n")
    assert status.startswith("200 application/json"), answered[-300:]
    assert json.loads(body)["result"]["password"]
    page = deployment.curl("http://127.0.0.1/+login", "-H", "Accept: text/html,application/xhtml+xml")
    assert "<form" in page and TITLE in page


def test_upload_then_pip_install_through_nginx(deployment, uploaded, probe_wheel):
    assert uploaded.startswith("http://127.0.0.1/alice/dev/+f/")
    headers = deployment.curl(uploaded, "-D", "-", "-o", "/tmp/fetched.whl")
    assert deployment.host.path("/tmp/fetched.whl").read_bytes() == probe_wheel.read_bytes()
    # 'expires max' is set only where nginx serves the file from the serverdir itself.
    assert "Cache-Control: max-age=315360000" in headers
    pip_install(deployment.host, "http://127.0.0.1/alice/dev/+simple/", "formula-probe==2.0", "/tmp/formula-site")
    assert deployment.host.path("/tmp/formula-site/formula_probe/__init__.py").exists()


def test_supervisor_brings_a_killed_server_back(deployment, uploaded, probe_wheel):
    before = deployment.server_pid()
    deployment.host.run(["kill", "-9", str(before)])
    deployment.host.wait_for(
        "supervisorctl status sentry-server | grep -q RUNNING && curl -fsS -o /dev/null http://127.0.0.1/+api",
        timeout=60,
    )
    assert deployment.server_pid() != before
    deployment.curl(uploaded, "-o", "/tmp/after-kill.whl")
    assert deployment.host.path("/tmp/after-kill.whl").read_bytes() == probe_wheel.read_bytes()
    listed = json.loads(deployment.curl("http://127.0.0.1/alice/dev", "-H", "Accept: application/json"))
    assert listed["result"]["bases"] == ["root/pypi"]


def test_port_change_touches_only_what_depends_on_it(deployment, uploaded, sentry_deb):
    server_before, nginx_before = deployment.server_pid(), deployment.nginx_master_pid()
    moved = master_pillar(sentry_deb)
    moved["sentry"]["server"]["port"] = 3150
    deployment.salt.set_pillar(moved)
    try:
        run = deployment.salt.apply("sentry")
        assert run.succeeded, run.failed
        assert set(run.changed) == {
            "sentry-supervisor-instance-settings",  # the URL the modules use
            "sentry-supervisor-program-file",
            "sentry-supervisor-program-running",
            "sentry-nginx-site-file",
            "sentry-nginx-config-valid",
            "sentry-nginx-service",
        }
        assert deployment.server_pid() != server_before
        assert deployment.nginx_master_pid() == nginx_before  # reloaded, not restarted
        assert "--port 3150" in deployment.host.run(["ps", "-eo", "args"]).stdout
        assert "login" in deployment.api()["result"]
    finally:
        deployment.salt.set_pillar(master_pillar(sentry_deb))
        restored = deployment.salt.apply("sentry")
    assert restored.succeeded, restored.failed
    assert deployment.salt.apply("sentry").changed == {}


def test_tls_serves_https_and_redirects_plain_http(deployment, uploaded, sentry_deb):
    host = deployment.host
    host.sh(
        "mkdir -p /etc/ssl/sentry-test && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost"
        " -keyout /etc/ssl/sentry-test/key.pem -out /etc/ssl/sentry-test/cert.pem 2>/dev/null"
    )
    server_before = deployment.server_pid()
    secured = master_pillar(sentry_deb)
    secured["sentry"]["nginx"] = {
        "tls": {
            "enabled": True,
            "cert": "/etc/ssl/sentry-test/cert.pem",
            "key": "/etc/ssl/sentry-test/key.pem",
            "hsts_seconds": 600,
        }
    }
    deployment.salt.set_pillar(secured)
    try:
        run = deployment.salt.apply("sentry")
        assert run.succeeded, run.failed
        assert set(run.changed) == {"sentry-nginx-site-file", "sentry-nginx-config-valid", "sentry-nginx-service"}
        assert deployment.server_pid() == server_before
        api = json.loads(deployment.curl("https://127.0.0.1/+api", "-k", "-H", "Accept: application/json"))
        assert api["result"]["login"] == "https://127.0.0.1/+login"  # X-outside-url carries the scheme
        plain = host.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://127.0.0.1/+api"]
        ).stdout
        assert plain == "301 https://127.0.0.1/+api"
        headers = deployment.curl("https://127.0.0.1/+api", "-k", "-D", "-", "-o", "/dev/null").lower()
        for header in (
            "strict-transport-security: max-age=600",
            "x-content-type-options: nosniff",
            "content-security-policy: frame-ancestors 'self'",
            "referrer-policy: same-origin",
            "server: nginx\n",  # no version
        ):
            assert header in headers, (header, headers)
    finally:
        deployment.salt.set_pillar(master_pillar(sentry_deb))
        restored = deployment.salt.apply("sentry")
    assert restored.succeeded, restored.failed


def test_tofs_source_dir_overrides_a_template(deployment, sentry_deb):
    """A site's own nginx template (found first under tofs:source_dir) replaces the formula's."""
    stock = (REPO / "sentry" / "files" / "default" / "nginx-site.conf.jinja").read_text()
    site_template = deployment.host.path(f"{TOFS_ROOT}/site-templates/nginx-site.conf.jinja")
    site_template.parent.mkdir(parents=True, exist_ok=True)
    site_template.write_text(
        stock.replace(
            "    client_max_body_size", "    add_header X-Site-Template ours always;\n    client_max_body_size"
        )
    )
    overridden = master_pillar(sentry_deb)
    overridden["sentry"]["tofs"] = {"source_dir": "salt://site-templates"}
    deployment.salt.set_pillar(overridden)
    deployment.salt.forget_file_lists()
    try:
        run = deployment.salt.apply("sentry")
        assert run.succeeded, run.failed
        assert set(run.changed) == {"sentry-nginx-site-file", "sentry-nginx-config-valid", "sentry-nginx-service"}
        assert "x-site-template: ours" in deployment.curl("http://127.0.0.1/+api", "-D", "-", "-o", "/dev/null").lower()
    finally:
        deployment.salt.set_pillar(master_pillar(sentry_deb))
        restored = deployment.salt.apply("sentry")
    assert restored.succeeded, restored.failed
    assert "x-site-template" not in deployment.curl("http://127.0.0.1/+api", "-D", "-", "-o", "/dev/null").lower()


def test_replica_on_the_same_host_syncs_the_upload(deployment, uploaded, probe_wheel):
    replica = deployment.salt.apply("sentry", f"pillar={json.dumps(REPLICA_OVERRIDE)}")
    assert replica.succeeded, replica.failed or replica.errors
    assert "sentry-replica" in deployment.host.run(["supervisorctl", "status"]).stdout
    replica_link = uploaded.replace("http://127.0.0.1/", "http://127.0.0.1:8080/")
    deployment.host.wait_for(f"curl -fsS -o /tmp/from-replica.whl {replica_link}", timeout=90)
    assert deployment.host.path("/tmp/from-replica.whl").read_bytes() == probe_wheel.read_bytes()
    status = json.loads(deployment.curl("http://127.0.0.1:3142/+status", "-H", "Accept: application/json"))
    assert status["result"]["role"] == "REPLICA"
    deadline = time.monotonic() + 60
    while status["result"]["serial"] != status["result"].get("primary-serial", status["result"].get("master-serial")):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
        status = json.loads(deployment.curl("http://127.0.0.1:3142/+status", "-H", "Accept: application/json"))
    assert deployment.salt.apply("sentry", f"pillar={json.dumps(REPLICA_OVERRIDE)}").changed == {}


def test_clean_removes_everything_but_the_data_and_apply_works_again(deployment, uploaded, probe_wheel):
    host = deployment.host
    # One instance of several goes with its program and site; sentry.clean then takes the rest.
    for sls in ("sentry.supervisor.clean", "sentry.nginx.clean"):
        removed = deployment.salt.apply(sls, f"pillar={json.dumps(REPLICA_OVERRIDE)}")
        assert removed.succeeded, removed.failed or removed.errors
    cleaned = deployment.salt.apply("sentry.clean")
    assert cleaned.succeeded, cleaned.failed or cleaned.errors
    assert host.run(["dpkg-query", "-W", "sentry"], check=False).returncode != 0
    assert host.run(["id", "sentry"], check=False).returncode != 0
    for gone in (
        "/etc/supervisor/conf.d/sentry-server.conf",
        "/etc/supervisor/conf.d/sentry-replica.conf",
        "/etc/nginx/sites-enabled/sentry.conf",
        "/etc/nginx/sites-available/sentry-replica.conf",
        "/etc/sentry",
    ):
        assert not host.path(gone).exists(), gone
    # nginx as it was found: Debian's default site back, running and answering.
    assert deployment.nginx_config() == deployment.nginx_before
    assert "Welcome to nginx" in deployment.curl("http://127.0.0.1/")
    assert host.path("/var/lib/sentry/data/.nodeinfo").exists()
    assert deployment.salt.apply("sentry.clean").changed == {}

    again = deployment.salt.apply("sentry")
    assert again.succeeded, again.failed or again.errors
    deployment.curl(uploaded, "-o", "/tmp/after-clean.whl")
    assert host.path("/tmp/after-clean.whl").read_bytes() == probe_wheel.read_bytes()
    assert deployment.salt.apply("sentry").changed == {}


def test_test_mode_on_a_fresh_host_changes_nothing(sentry_deb):
    with new_host("dry-run") as host:
        salt = MasterlessSalt(host, master_pillar(sentry_deb))
        before = salt.changed_files()
        planned = salt.apply("sentry", "test=True")
        assert planned.returncode == 0, planned.failed or planned.errors
        assert planned.failed == {}
        would_change = planned.would_change
        assert {
            "sentry-package-installed",
            "sentry-user",
            "sentry-server-initialised",
            "sentry-supervisor-program-running",
            "sentry-nginx-site-file",
        } <= would_change
        assert salt.changed_files() == before
        assert host.run(["id", "sentry"], check=False).returncode != 0
        for service in ("supervisor", "nginx"):
            assert host.run(["service", service, "status"], check=False).returncode != 0, f"{service} was started"
