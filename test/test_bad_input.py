"""Bad input, refused: every case fails naming the key or argument, and changes nothing.

One test host carries a working deployment (test_formula's master pillar).
Each case then applies ``sentry`` with a bad pillar, or calls a
``sentry_admin`` function with a bad argument, and the host is compared
before and after: every file and directory under /etc and /var/lib/sentry
(type, mode, owner, size, mtime, sha256), the package's dpkg status and
version, and supervisor's programs (state and pid).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

import pytest
from support.formula_pillars import REPLICA_OVERRIDE, master_pillar
from support.host_roots import new_host
from support.masterless import MasterlessSalt

pytestmark = pytest.mark.slow

ALICE_PASSWORD = "Bad-Input-Alice-pw-12"
OTHER_SITE = "/etc/nginx/sites-enabled/other.conf"
NOT_AN_EXPORT = "/var/lib/sentry/not-an-export"

# Runs inside the host with Debian's python: one line per path, sorted.
SNAPSHOT_SCRIPT = r"""
import hashlib, json, os, stat, sys

skipped = set(sys.argv[1:])
seen = {}
for top in ("/etc", "/var/lib/sentry"):
    for root, dirs, files in os.walk(top):
        dirs[:] = [name for name in dirs if os.path.join(root, name) not in skipped]
        for path in [root] + [os.path.join(root, name) for name in dirs + files]:
            if path in skipped or path in seen:
                continue
            info = os.lstat(path)
            entry = {
                "type": stat.S_IFMT(info.st_mode),
                "mode": oct(stat.S_IMODE(info.st_mode)),
                "owner": f"{info.st_uid}:{info.st_gid}",
                "size": info.st_size,
                "mtime_ns": info.st_mtime_ns,
            }
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    entry["sha256"] = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                entry["target"] = os.readlink(path)
            seen[path] = entry
print(json.dumps(seen, sort_keys=True))
"""

# Left out of the snapshot, each for a reason:
SKIPPED = (
    # MasterlessSalt's own configuration, pillar, cache and log: every salt-call writes there,
    # and each case writes its pillar there.
    MasterlessSalt.CONF,
)


def snapshot(salt: MasterlessSalt) -> dict:
    host = salt.host
    files = json.loads(host.run(["/usr/bin/python3", "-c", SNAPSHOT_SCRIPT, *SKIPPED]).stdout)
    package = host.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "sentry"], check=False).stdout
    # supervisorctl exits non-zero unless every program runs: its output is what counts.
    programs = host.run(["supervisorctl", "status"], check=False).stdout
    return {
        "files": files,
        "package": package,
        # The uptime grows by itself; the state and the pid show a stop or a restart.
        "programs": re.sub(r",\s+uptime\s+\S+", "", programs).strip(),
    }


def differences(before: dict, after: dict) -> list[str]:
    """What changed, readably: paths added, removed or altered, and the package or programs."""
    found = []
    for path in sorted(set(before["files"]) | set(after["files"])):
        old, new = before["files"].get(path), after["files"].get(path)
        if old != new:
            found.append(f"{path}: {old} -> {new}")
    found += [
        f"{key}: {before[key]!r} -> {after[key]!r}" for key in ("package", "programs") if before[key] != after[key]
    ]
    return found


def merged(base: dict, override: dict) -> dict:
    """``base`` with ``override`` laid over it, mapping by mapping (as Salt merges pillars)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass
class Case:
    """One bad input: a pillar laid over the good one for ``state.apply sentry``, or a salt-call."""

    id: str
    message: str
    pillar: dict | None = None
    call: tuple[str, ...] = ()
    # Shell run inside the host before the snapshot, and after the case.
    setup: str = ""
    teardown: str = ""


# test_formula's replica beside the master, but without a copy of the master's secret.
REPLICA_WITHOUT_SECRET = merged(
    REPLICA_OVERRIDE["sentry"],
    {"server": {"root_password": "", "secretfile": "/var/lib/sentry/.replica-secret"}},
)

CASES = [
    # --- pillar, state.apply sentry ---
    Case("port-not-an-int", "sentry:server:port must be a number, got string", {"server": {"port": "3141"}}),
    Case(
        "kdf-memory-below-lanes",
        "sentry:server:secret_kdf:memory_cost must be a whole number 32 or more, got 16",
        {"server": {"secret_kdf": {"memory_cost": 16, "parallelism": 4}}},
    ),
    Case(
        "prune-keep-zero",
        "sentry:prune_backups:keep must be a whole number 1 or more, got 0",
        {"prune_backups": {"keep": 0}},
    ),
    Case("port-out-of-range", "sentry:nginx:port must be a port number 1-65535, got 70000", {"nginx": {"port": 70000}}),
    Case(
        "unknown-install-source",
        "sentry:package:source must be one of repo, deb, apt_repo",
        {"package": {"source": "ftp"}},
    ),
    Case(
        "deb-does-not-exist",
        "sentry:package:deb: no such file /nonexistent/sentry.deb",
        {"package": {"deb": "/nonexistent/sentry.deb"}},
    ),
    Case("root-password-empty", "sentry:server:root_password is required", {"server": {"root_password": ""}}),
    Case(
        "master-url-not-a-url",
        "sentry:server:master_url must be an http(s) URL",
        {"server": {"master_url": "master.example.org:3141"}},
    ),
    Case(
        "replica-without-secret",
        "sentry:server:secret (the master's secret) is required for a replica",
        REPLICA_WITHOUT_SECRET,
    ),
    Case(
        "ca-certificate-not-pem",
        "sentry:mirror:ca_certificates:example-corp must be a PEM certificate",
        {"mirror": {"ca_certificates": {"example-corp": "/usr/local/share/ca-certificates/example-corp.crt"}}},
    ),
    Case(
        "ca-certificate-broken",
        "sentry:mirror:ca_certificates:example-corp is no CA certificate TLS can load",
        {
            "mirror": {
                "ca_certificates": {
                    "example-corp": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
                }
            }
        },
    ),
    # A value no pillar rule knows to refuse, which nginx does: the site is checked in a copy of
    # /etc/nginx before it is written, so the live site stays as it was.
    Case(
        "nginx-refuses-the-site",
        'unknown directive "bogus_directive" in /etc/nginx/sites-enabled/sentry.conf',
        {"nginx": {"server_name": "index.example.org; bogus_directive on"}},
    ),
    Case("theme-dir-missing", "sentry:theme:dir must be an absolute path", {"theme": {"dir": ""}}),
    Case(
        "theme-source-missing",
        "sentry:theme:source: no directory salt://no-such-theme",
        {"theme": {"source": "salt://no-such-theme"}},
    ),
    Case(
        "theme-source-not-salt-url",
        "sentry:theme:source must be a salt:// directory",
        {"theme": {"source": "/srv/theme"}},
    ),
    Case(
        "bootstrap-bases-not-a-list",
        "sentry:bootstrap:indexes:alice/dev:bases must be a list of index names",
        {"bootstrap": {"indexes": {"alice/dev": {"bases": "root/pypi"}}}},
    ),
    Case(
        "bootstrap-base-missing",
        "base index nobody/nothing of alice/dev does not exist: neither on the server nor in sentry:bootstrap:indexes",
        {
            "bootstrap": {
                "users": {"alice": {"password": ALICE_PASSWORD}},
                "indexes": {"alice/dev": {"bases": ["nobody/nothing"]}},
            }
        },
    ),
    Case(
        "bootstrap-index-with-a-slash",
        "sentry:bootstrap:indexes: an index is named user/index",
        {"bootstrap": {"indexes": {"alice/dev/extra": {}}}},
    ),
    Case(
        "bootstrap-user-with-spaces",
        "sentry:bootstrap:users: a user name has no spaces or slashes",
        {"bootstrap": {"users": {"al ice": {"password": ALICE_PASSWORD}}}},
    ),
    Case(
        "tls-without-cert-and-key",
        "sentry:nginx:tls:enabled needs sentry:nginx:tls:cert",
        {"nginx": {"tls": {"enabled": True}}},
    ),
    Case("unknown-top-level-key", "unknown key sentry:pakage", {"pakage": {"source": "deb"}}),
    Case(
        "body-size-not-nginx-syntax",
        "sentry:nginx:client_max_body_size must be a size in nginx's syntax",
        {"nginx": {"client_max_body_size": "100 MB"}},
    ),
    Case(
        "cache-index-not-an-index-name",
        "sentry:nginx:cache:indexes: each is an index name user/index",
        {"nginx": {"cache": {"indexes": ["pypi"]}}},
    ),
    Case(
        "ldap-without-a-way-to-find-users",
        "sentry:auth:ldap:urls needs sentry:auth:ldap:user_template or sentry:auth:ldap:user_search:base",
        {"auth": {"ldap": {"urls": ["ldap://ldap.example.org"]}}},
    ),
    Case(
        "ldap-key-devpi-ldap-refuses",
        "unknown key sentry:auth:ldap:timeout",
        {"auth": {"ldap": {"urls": ["ldap://ldap.example.org"], "user_template": "uid={username}", "timeout": 5}}},
    ),
    Case(
        "ldap-group-search-without-filter",
        "sentry:auth:ldap:group_search:filter is required with sentry:auth:ldap:group_search:base",
        {
            "auth": {
                "ldap": {
                    "urls": ["ldaps://ldap.example.org"],
                    "user_template": "uid={username},ou=people,dc=example,dc=org",
                    "group_search": {"base": "ou=groups,dc=example,dc=org", "filter": ""},
                }
            }
        },
    ),
    Case(
        "ldap-bind-password-without-dn",
        "sentry:auth:ldap:bind_dn and sentry:auth:ldap:bind_password go together",
        {
            "auth": {
                "ldap": {
                    "urls": ["ldap://ldap.example.org"],
                    "user_template": "uid={username},ou=people,dc=example,dc=org",
                    "bind_password": "Bad-Input-Bind-pw-5",
                }
            }
        },
    ),
    Case(
        "nginx-port-used-by-another-site",
        f"sentry:nginx:port 80 is already used by {OTHER_SITE}",
        {},  # the good pillar: the other site, made before the snapshot, is the bad input
        setup=f"printf 'server {{\\n    listen 80;\\n    server_name other.example.org;\\n}}\\n' > {OTHER_SITE}",
        teardown=f"rm -f {OTHER_SITE}",
    ),
    # --- module arguments, salt-call sentry_admin.* ---
    Case(
        "index-name-with-a-slash",
        "an index is named USER/INDEX, without spaces, got 'alice/dev/extra'",
        call=("sentry_admin.index_set", "alice/dev/extra"),
    ),
    Case(
        "user-name-with-spaces",
        "a user name has no spaces or slashes, got 'al ice'",
        call=("sentry_admin.user_set", "al ice"),
    ),
    Case(
        "index-base-missing",
        "base index nobody/nothing of root/dev does not exist",
        call=("sentry_admin.index_set", "root/dev", "bases=[nobody/nothing]"),
    ),
    Case(
        "bootstrap-index-base-missing",
        "base index nobody/nothing of alice/dev does not exist",
        call=("sentry_admin.bootstrap_index", "alice", "dev", "bases=nobody/nothing"),
    ),
    Case(
        "export-inside-the-serverdir",
        "export destination /var/lib/sentry/data/export lies inside the serverdir",
        call=("sentry_admin.export", "dest=/var/lib/sentry/data/export"),
    ),
    Case(
        "import-from-a-folder-not-an-export",
        f"{NOT_AN_EXPORT} is not a readable sentry export",
        call=("sentry_admin.import", NOT_AN_EXPORT, "serverdir=/var/lib/sentry/imported"),
        setup=f"install -d -o sentry -g sentry {NOT_AN_EXPORT} && echo hello > {NOT_AN_EXPORT}/README",
        teardown=f"rm -rf {NOT_AN_EXPORT}",
    ),
    Case(
        "initialise-without-root-password",
        "initialising /var/lib/sentry/fresh as a master needs root_password",
        call=("sentry_data.initialise", "/var/lib/sentry/fresh"),
    ),
]


@pytest.fixture(scope="module")
def deployed(sentry_deb):
    """A host running sentry from the good pillar; yields (salt, the good pillar)."""
    with new_host("bad-input") as host:
        good = master_pillar(sentry_deb)
        salt = MasterlessSalt(host, good)
        first = salt.apply("sentry")
        assert first.succeeded, first.failed or first.errors
        yield salt, good


def test_good_pillar_changes_nothing_the_second_time(deployed):
    """The baseline: a good apply leaves the snapshot as it was, so a difference below is the case's doing."""
    salt, _good = deployed
    before = snapshot(salt)
    again = salt.apply("sentry")
    assert again.succeeded and again.changed == {}, again.failed or again.changed
    assert differences(before, snapshot(salt)) == []


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_bad_input_is_refused_naming_it_and_changes_nothing(deployed, case):
    salt, good = deployed
    host = salt.host
    if case.setup:
        host.sh(case.setup)
    try:
        before = snapshot(salt)
        if case.pillar is not None:
            salt.set_pillar({"sentry": merged(good["sentry"], case.pillar)})
            run = salt.apply("sentry")
            returncode, output = run.returncode, run.errors + json.dumps(run.failed)
        else:
            called = salt.call(*case.call, check=False)
            returncode, output = called.returncode, called.stdout + called.stderr
        after = snapshot(salt)
    finally:
        salt.set_pillar(good)
        if case.teardown:
            host.sh(case.teardown)
    assert returncode != 0, output[-3000:]
    assert case.message in output, output[-3000:]
    assert differences(before, after) == []
