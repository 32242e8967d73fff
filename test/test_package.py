"""The real sentry deb: build, install, the package's interface, data round trips, purge.

Every test runs inside a throw-away test host (see support/hosts.py), so dpkg, files
and servers never touch this machine's own root.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from support.argv import ArgvWatch
from support.client import login_token, pip_install, sentry_client
from support.debs import build_deb, install_deb
from support.hosts import TestHostError
from support.paths import DEFAULT_VERSION, REPO, deb_version_for
from support.server import HostServer
from support.wheels import make_wheel

ROOT_PASSWORD = "root-Secret-4711"
ALICE_PASSWORD = "-alice-Secret-0815"  # a leading "-", as generated passwords may have
DEB_VERSION = deb_version_for()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_snapshot(host, path: str) -> str:
    """Names, modes and content hashes of every file below ``path`` inside the host."""
    listed = host.sh(
        f"cd {path} && find . -printf '%p %m %s\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum"
    )
    return listed.stdout


def init_server(host, serverdir: str, password: str = ROOT_PASSWORD, *extra: str):
    return host.run(["sentry-server", "--init", "--serverdir", serverdir, *extra], input=password + "\n")


# --- build ---------------------------------------------------------------


def test_deb_is_built_with_the_pinned_version(sentry_deb):
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(sentry_deb), "Package", "Version", "Depends"], capture_output=True, text=True, check=True
    ).stdout
    assert "Package: sentry" in fields
    assert f"Version: {DEB_VERSION}" in fields
    assert sentry_deb.parent == REPO / "build"
    contents = subprocess.run(["dpkg-deb", "-c", str(sentry_deb)], capture_output=True, text=True, check=True).stdout
    assert "./usr/sbin/sentry-server -> /opt/virtualenvs/sentry/bin/sentry-server" in contents
    assert "./usr/bin/sentry -> /opt/virtualenvs/sentry/bin/sentry" in contents
    assert "./opt/virtualenvs/sentry/lib/python3.11/site-packages/devpi_server/" in contents
    assert "./var/lib/sentry" not in contents


def test_rebuild_is_skipped_when_nothing_changed(sentry_deb):
    before = sentry_deb.stat().st_mtime_ns
    again = build_deb(DEFAULT_VERSION)
    assert again == sentry_deb
    assert sentry_deb.stat().st_mtime_ns == before


def test_unknown_version_is_refused():
    completed = subprocess.run(
        [str(REPO / "packaging" / "build-deb"), "0.0.1"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "no pins for devpi-server 0.0.1" in completed.stderr
    assert DEFAULT_VERSION in completed.stderr


# --- the installed package's interface ------------------------------------


def test_versions_answer(sentry_host):
    server = sentry_host.run(["sentry-server", "--version"]).stdout
    client = sentry_host.run(["sentry", "--version"]).stdout
    assert server.startswith(f"sentry-server {DEB_VERSION} (devpi-server {DEFAULT_VERSION},")
    assert client.startswith(f"sentry {DEB_VERSION} (")
    assert "devpi-web" in server and "devpi-client" in client
    for plugin, pinned in plugin_pins().items():  # carried, pinned, and named
        assert f"{plugin} {pinned}" in server and f"{plugin} {pinned}" in client, (plugin, server)


def plugin_pins() -> dict[str, str]:
    """packaging/plugins.txt: plugin name -> pinned version."""
    pins = {}
    for line in (REPO / "packaging" / "plugins.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement, pinned = line.split("==")
            pins[requirement.split("[")[0]] = pinned
    return pins


def test_the_plugins_load_into_the_server(sentry_host):
    assert set(plugin_pins()) == {"devpi-ldap", "devpi-lockdown", "devpi-tokens"}
    listed = sentry_host.run(["/opt/virtualenvs/sentry/bin/devpi-server", "--help"])
    assert "--ldap-config" in listed.stdout  # devpi-ldap's option
    assert "pkg_resources is deprecated" not in listed.stdout + listed.stderr
    plugins = sentry_host.run(
        [
            "/opt/virtualenvs/sentry/bin/python",
            "-c",
            "from importlib.metadata import entry_points as e; print(sorted(p.name for p in e(group='devpi_server')))",
        ]
    ).stdout
    for plugin in [*plugin_pins(), "sentry"]:  # sentry: the deb's own (sentry_commands.devpi_plugin)
        assert f"'{plugin}'" in plugins, plugins
    status = sentry_host.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "sentry"]).stdout
    assert status == f"install ok installed {DEB_VERSION}"


def test_venv_uses_debians_python_and_install_starts_nothing(sentry_host):
    version = sentry_host.run(
        ["/opt/virtualenvs/sentry/bin/python", "-c", "import sys; print(sys.base_prefix, sys.version.split()[0])"]
    ).stdout
    assert version.startswith("/usr 3.11.")
    processes = sentry_host.run(["ps", "-eo", "args"]).stdout
    assert "devpi" not in processes and "sentry-server" not in processes
    assert sentry_host.sh("test ! -e /var/lib/sentry", check=False).returncode == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--init", "--export", "/tmp/x"], "not allowed with argument --init"),
        (["--port", "70000"], "port out of range"),
        (["--port", "http"], "not a port number"),
        (["--master-url", "ftp://master"], "not an http(s) URL"),
        (["--export", "/tmp/x", "--master-url", "http://master:3141"], "--master-url cannot go with --export"),
        (["--root-passwd-file", "/tmp/pw"], "--root-passwd-file only goes with --init"),
        (["--role", "replica"], "--role replica needs --master-url"),
        (["--export", "/tmp/x", "--", "--debug"], "arguments after '--' are for the server only"),
        (["--fsck", "--import", "/tmp/x"], "not allowed with argument --fsck"),
        (["--fsck", "--", "--debug"], "arguments after '--' are for the server only"),
    ],
)
def test_usage_errors_exit_2(sentry_host, argv, message):
    completed = sentry_host.run(["sentry-server", *argv], check=False)
    assert completed.returncode == 2
    assert message in completed.stderr


def test_gen_config_writes_supervisor_and_nginx(sentry_host):
    sentry_host.sh("rm -rf /tmp/gen && mkdir /tmp/gen")
    sentry_host.sh("cd /tmp/gen && LOGNAME=sentry sentry-server --gen-config --serverdir /srv/gen --port 3155")
    supervisor = sentry_host.path("/tmp/gen/gen-config/supervisor-sentry.conf").read_text()
    nginx = sentry_host.path("/tmp/gen/gen-config/nginx-sentry.conf").read_text()
    assert "command = /usr/sbin/sentry-server --serverdir /srv/gen --host 127.0.0.1 --port 3155" in supervisor
    assert "user = sentry" in supervisor
    assert "localhost:3155" in nginx and "/srv/gen" in nginx


# --- a real server: upload, pip install, export, import --------------------


@pytest.fixture(scope="module")
def probe_wheel(tmp_path_factory):
    return make_wheel(tmp_path_factory.mktemp("wheels"), "sentry-probe", "1.0", payload="p" * 4096)


@pytest.fixture(scope="module")
def populated(sentry_host, probe_wheel):
    """A server with root password, user alice, index alice/dev (bases root/pypi) and one wheel; ``argv``: every
    command line seen on the machine meanwhile."""
    with ArgvWatch() as argv:
        init_server(sentry_host, "/srv/one")
        server = HostServer(sentry_host, "/srv/one", 3141).start()
        shutil.copy(probe_wheel, sentry_host.path("/tmp") / probe_wheel.name)
        sentry_client(sentry_host, "use", server.url)
        sentry_client(sentry_host, "login", "root", password=ROOT_PASSWORD)
        sentry_client(sentry_host, "user", "-c", "alice", "email=alice@example.org", password=ALICE_PASSWORD)
        sentry_client(sentry_host, "login", "alice", password=ALICE_PASSWORD)
        sentry_client(sentry_host, "index", "-c", "dev", "bases=root/pypi")
        sentry_client(sentry_host, "use", "alice/dev")
        sentry_client(sentry_host, "upload", f"/tmp/{probe_wheel.name}")
    server.argv = argv.seen
    yield server
    server.stop()


def release_link(server: HostServer) -> str:
    project = server.get_json("/alice/dev/sentry-probe")["result"]
    (link,) = project["1.0"]["+links"]
    return link["href"]


def download(host, url: str) -> bytes:
    host.run(["curl", "-fsS", "-o", "/tmp/downloaded", url])
    return host.path("/tmp/downloaded").read_bytes()


def test_index_has_bases_and_the_upload(populated, probe_wheel):
    index = populated.get_json("/alice/dev")["result"]
    assert index["bases"] == ["root/pypi"]
    assert download(populated.host, release_link(populated)) == probe_wheel.read_bytes()


def test_pip_installs_the_upload_back(populated):
    pip_install(populated.host, f"{populated.url}/alice/dev/+simple/", "sentry-probe==1.0", "/tmp/site-one")
    imported = populated.host.run(
        ["/usr/bin/python3", "-c", "import sentry_probe; print(sentry_probe.VERSION)"],
        env={"PYTHONPATH": "/tmp/site-one"},
    )
    assert imported.stdout.strip() == "1.0"


def test_passwords_never_reach_a_command_line(populated):
    """Every command line while the server was initialised and root and alice logged in (sampled every 20 ms)."""
    assert any("sentry-server" in command for command in populated.argv), "the sampler saw nothing"
    assert not [command for command in populated.argv if ROOT_PASSWORD in command or ALICE_PASSWORD in command]


@pytest.fixture(scope="module")
def exported(populated):
    """An export of the populated server, taken while it is stopped (as operators do)."""
    populated.stop()
    populated.host.run(["sentry-server", "--serverdir", "/srv/one", "--export", "/srv/dump"])
    populated.start()
    return "/srv/dump"


def test_export_then_import_keeps_every_byte(populated, exported, probe_wheel):
    host = populated.host
    host.run(["sentry-server", "--serverdir", "/srv/two", "--import", exported])
    assert "import-" not in host.sh("ls -a /srv").stdout
    imported = HostServer(host, "/srv/two", 3142).start()
    try:
        assert imported.get_json("/alice/dev")["result"]["bases"] == ["root/pypi"]
        assert sha256(download(host, release_link(imported))) == sha256(probe_wheel.read_bytes())
        pip_install(host, f"{imported.url}/alice/dev/+simple/", "sentry-probe==1.0", "/tmp/site-two")
        # devpi-import makes each user with an empty password before setting the exported hash (the package
        # hashes that empty password once for all): the exported hashes are what stands.
        assert login_token(host, imported.url, "alice", ALICE_PASSWORD)
        assert login_token(host, imported.url, "root", ROOT_PASSWORD)
        with pytest.raises(TestHostError):
            login_token(host, imported.url, "alice", "")
    finally:
        imported.stop()


def test_fsck_checks_every_file_and_names_a_damaged_one(populated, exported):
    host = populated.host
    host.run(["sentry-server", "--serverdir", "/srv/checked", "--import", exported])
    checked = host.run(["sentry-server", "--serverdir", "/srv/checked", "--fsck"])
    assert "Finished with a total of 1 files" in checked.stdout + checked.stderr
    (damaged,) = host.sh("find /srv/checked/+files -name '*.whl'").stdout.split()
    host.sh(f"printf damaged >> {damaged}")
    failed = host.run(["sentry-server", "--serverdir", "/srv/checked", "--fsck"], check=False)
    assert failed.returncode == 1
    assert f"{damaged.removeprefix('/srv/checked/+files/')} - sha256 mismatch" in failed.stdout + failed.stderr
    nothing = host.run(["sentry-server", "--serverdir", "/srv/nothing", "--fsck"], check=False)
    assert nothing.returncode == 1
    assert "/srv/nothing holds no initialised server: nothing to check" in nothing.stderr


# --- bad input: clear error, non-zero exit, nothing changed -----------------


def test_import_into_non_empty_serverdir_is_refused(populated, exported):
    host = populated.host
    init_server(host, "/srv/taken")
    before = tree_snapshot(host, "/srv/taken")
    refused = host.run(["sentry-server", "--serverdir", "/srv/taken", "--import", exported], check=False)
    assert refused.returncode == 1
    assert "serverdir /srv/taken is not empty" in refused.stderr
    assert tree_snapshot(host, "/srv/taken") == before
    assert "import-" not in host.sh("ls -a /srv").stdout


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/srv/no-such-export", "export directory /srv/no-such-export does not exist"),
        ("/etc", "/etc is not a sentry export"),
    ],
)
def test_import_from_missing_or_foreign_dir_is_refused(sentry_host, source, message):
    refused = sentry_host.run(["sentry-server", "--serverdir", "/srv/fresh", "--import", source], check=False)
    assert refused.returncode == 1
    assert message in refused.stderr
    assert sentry_host.sh("test ! -e /srv/fresh", check=False).returncode == 0


def test_truncated_export_fails_and_leaves_target_untouched(populated, exported):
    host = populated.host
    host.sh(f"rm -rf /srv/broken && cp -a {exported} /srv/broken")
    host.sh("find /srv/broken -name '*.whl' -delete")
    host.sh("mkdir -p /srv/target && chmod 0750 /srv/target")
    failed = host.run(["sentry-server", "--serverdir", "/srv/target", "--import", "/srv/broken"], check=False)
    assert failed.returncode == 1
    assert "devpi-import failed" in failed.stderr
    assert host.sh("ls -A /srv/target").stdout == ""
    assert "import-" not in host.sh("ls -a /srv").stdout


def test_init_with_empty_password_is_refused(sentry_host):
    refused = sentry_host.run(["sentry-server", "--init", "--serverdir", "/srv/empty-pw"], input="\n", check=False)
    assert refused.returncode == 1
    assert "root password is empty" in refused.stderr
    assert sentry_host.sh("test ! -e /srv/empty-pw", check=False).returncode == 0


def test_a_root_password_starting_with_a_dash_is_the_password(sentry_host):
    """script/deploy's generated passwords start with '-' one time in 64: never read as an option."""
    password = "-Dash-first-pw-1"
    init_server(sentry_host, "/srv/dash-pw", password)
    server = HostServer(sentry_host, "/srv/dash-pw", 3160).start()
    try:
        assert login_token(sentry_host, server.url, "root", password)
    finally:
        server.stop()


def test_init_twice_is_refused(sentry_host):
    init_server(sentry_host, "/srv/twice")
    before = tree_snapshot(sentry_host, "/srv/twice")
    again = sentry_host.run(["sentry-server", "--init", "--serverdir", "/srv/twice"], input="other\n", check=False)
    assert again.returncode == 1
    assert "already initialised" in again.stderr
    assert tree_snapshot(sentry_host, "/srv/twice") == before


def test_export_into_non_empty_dir_is_refused(populated):
    host = populated.host
    host.sh("mkdir -p /srv/occupied && echo keep > /srv/occupied/file")
    before = tree_snapshot(host, "/srv/occupied")
    refused = host.run(["sentry-server", "--serverdir", "/srv/one", "--export", "/srv/occupied"], check=False)
    assert refused.returncode == 1
    assert "must be absent or empty" in refused.stderr
    assert tree_snapshot(host, "/srv/occupied") == before


def test_serving_an_uninitialised_dir_says_what_to_do(sentry_host):
    refused = sentry_host.run(["sentry-server", "--serverdir", "/srv/nothing"], check=False)
    assert refused.returncode == 1
    assert "run 'sentry-server --init --serverdir /srv/nothing' first" in refused.stderr


# --- versions, upgrade and purge -------------------------------------------


@pytest.mark.slow
def test_an_older_version_builds_and_upgrades_in_place(bare_host, old_sentry_deb, sentry_deb):
    old_version = old_sentry_deb.name.split("_")[1]
    assert old_version != DEB_VERSION
    install_deb(bare_host, old_sentry_deb)
    assert f"sentry-server {old_version} " in bare_host.run(["sentry-server", "--version"]).stdout
    install_deb(bare_host, sentry_deb)
    assert f"sentry-server {DEB_VERSION} " in bare_host.run(["sentry-server", "--version"]).stdout


def test_purge_removes_the_package_and_keeps_the_data(bare_host, sentry_deb):
    install_deb(bare_host, sentry_deb)
    init_server(bare_host, "/var/lib/sentry/data")
    bare_host.run(["sentry-server", "--version"])
    bare_host.run(["dpkg", "--purge", "sentry"])
    for gone in ("/opt/virtualenvs", "/usr/sbin/sentry-server", "/usr/bin/sentry"):
        assert bare_host.sh(f"test ! -e {gone} && test ! -L {gone}", check=False).returncode == 0, gone
    assert bare_host.sh("test -f /var/lib/sentry/data/.nodeinfo", check=False).returncode == 0
    # The overlay's upper layer holds what the host changed; directories that
    # exist on the machine anyway are only copied up for their timestamps.
    left = [
        str(path.relative_to(bare_host.changes))
        for path in bare_host.changes.rglob("*")
        if not (path.is_dir() and (Path("/") / path.relative_to(bare_host.changes)).is_dir())
    ]
    assert not [p for p in left if p.startswith(("opt/", "usr/"))], sorted(left)


HTTPS_SERVER = """
import http.server, ssl, sys
server = http.server.HTTPServer(("127.0.0.1", 8443), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tmp/tls/server.pem", "/tmp/tls/server.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""

FETCH = "import httpx; print(httpx.get('https://127.0.0.1:8443/index.html').text)"


def test_outgoing_tls_trusts_the_hosts_ca_store(bare_host, sentry_deb):
    """A CA added with update-ca-certificates is trusted, with a daemon's clean environment and nothing else."""
    host = bare_host
    install_deb(host, sentry_deb)
    host.sh(
        "mkdir -p /tmp/tls/www && cd /tmp/tls && echo sentry-upstream > www/index.html"
        " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=sentry test CA'"
        "    -keyout ca.key -out ca.pem 2>/dev/null"
        " && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null"
        " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
        " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        "    -extfile san.ext -out server.pem 2>/dev/null"
    )
    host.path("/tmp/tls/serve.py").write_text(HTTPS_SERVER)
    host.sh("cd /tmp/tls/www; setsid /usr/bin/python3 /tmp/tls/serve.py >/tmp/tls/log 2>&1 </dev/null &")
    host.wait_for("curl -sk -o /dev/null https://127.0.0.1:8443/index.html", timeout=20)
    fetch = ["env", "-i", "/opt/virtualenvs/sentry/bin/python", "-c", FETCH]

    unknown = host.run(fetch, check=False)
    assert unknown.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in unknown.stderr

    shutil.copy(host.path("/tmp/tls/ca.pem"), host.path("/usr/local/share/ca-certificates") / "sentry-test-ca.crt")
    host.run(["update-ca-certificates"])
    assert host.run(fetch).stdout.strip() == "sentry-upstream"
    where = host.run(["env", "-i", *fetch[2:4], "import certifi; print(certifi.where())"])
    assert host.run(["readlink", "-f", where.stdout.strip()]).stdout.strip() == "/etc/ssl/certs/ca-certificates.crt"
