"""One pillar tree, three environments (issue 14): example/pillar applied through a real salt-master.

The master serves example/pillar as an operator keeps it (top.sls choosing
each environment's files by nodegroup, example/master.d's nodegroups in the
master's configuration) to three minions, one per environment:
sentry-dev-1, sentry-staging-1 and sentry-prod-1. Each minion's own pillar,
merged last, holds only what no test host can do otherwise: the package from
a local apt repository (the older of the two built debs) instead of the
company's, and offline mode (no internet). The certificates prod and staging
name are made by the test, as an operator's certificate tooling would put
them there.

One ``salt 'sentry-*' state.apply sentry`` deploys all three. Then, from
outside (this process, over the bridge): each serves its own theme title;
dev lets a new user register and make an index, prod refuses its own user
an index (only root makes them there); prod and staging answer HTTPS with
their certificates and redirect plain HTTP, dev answers plain HTTP; staging
mirrors its own upstream, prod PyPI; prod and staging schedule backups, dev
does not; prod's replicas (no host of theirs here) get, as the master compiles
their pillar, prod's settings with their own over them. A second apply
changes nothing anywhere. A wrong key in staging's
file fails staging alone, naming the key, and leaves dev and prod as they
were.

Then ``salt-run state.orchestrate sentry.upgrade`` upgrades staging alone
(its master named in the orchestration's pillar): staging runs the newer
version with its data and settings, prod and dev keep their version, server
process and data; with staging's version then set in the pillar, an apply
of all three changes nothing.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from support.aptrepo import use_apt_repo
from support.cluster import SaltCluster, changed, failed
from support.debs import deb_version
from support.hosts import TestHost, host_address
from support.paths import REPO
from support.upstream import MAKE_CERTIFICATES

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "example"
ENVIRONMENTS = ("dev", "staging", "prod")
MINIONS = {environment: f"sentry-{environment}-1" for environment in ENVIRONMENTS}
FIRST_HOST_NUMBER = 56  # 56, 57, 58: dev, staging, prod


def example_pillar(environment: str) -> dict:
    """What example/pillar/sentry/<environment>.sls says (its sentry: key)."""
    return yaml.safe_load((EXAMPLE / "pillar" / "sentry" / f"{environment}.sls").read_text())["sentry"]


def host_only_pillar(version: str) -> dict:
    """Merged over the tree for every minion: what a test host cannot have otherwise."""
    return {"sentry": {"package": {"source": "repo", "version": version}, "server": {"offline_mode": True}}}


def master_overrides() -> dict:
    return yaml.safe_load((EXAMPLE / "master.d" / "sentry-environments.conf").read_text())


def make_certificate(folder: Path, address: str) -> Path:
    """A test CA and a certificate for ``address`` signed by it, made as the upstream test host makes its own
    (support.upstream's MAKE_CERTIFICATES, in ``folder``/tls); that folder."""
    made = MAKE_CERTIFICATES.format(root=folder, address=address, san=f"IP:{address}")
    subprocess.run(["sh", "-c", made], check=True)
    return folder / "tls"


def put_certificate(host: TestHost, folder: Path, tls: dict) -> None:
    """The certificate and key where the environment's pillar names them."""
    for source, target, mode in (("server.pem", tls["cert"], 0o644), ("server.key", tls["key"], 0o600)):
        inside = host.path(target)
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.write_bytes((folder / source).read_bytes())
        inside.chmod(mode)


class Outside:
    """HTTP(S) from this process to one environment's host, as a client on the network would."""

    def __init__(self, address: str, ca: Path | None = None) -> None:
        self.base = f"https://{address}" if ca else f"http://{address}"
        handlers: list = [urllib.request.ProxyHandler({}), NoRedirect()]
        if ca:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca))))
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, method: str, path: str, body: dict | None = None, auth: str = "") -> tuple[int, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            headers["X-Devpi-Auth"] = auth
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def page(self) -> str:
        request = urllib.request.Request(self.base + "/", headers={"Accept": "text/html"})  # noqa: S310
        with self.opener.open(request, timeout=30) as response:
            return response.read().decode()

    def login(self, user: str, password: str) -> str:
        status, text = self.request("POST", "/+login", {"user": user, "password": password})
        assert status == 200, (status, text)
        token = json.loads(text)["result"]["password"]
        return base64.b64encode(f"{user}:{token}".encode()).decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer of its own here
        return None


def plain_http_answer(address: str) -> tuple[int, str]:
    """Status and Location of plain HTTP's answer to GET /+api."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(f"http://{address}/+api", timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", "")


def apply_all(cluster: SaltCluster) -> dict[str, dict]:
    return cluster.apply("sentry-*", "sentry")


class Environments:
    """The cluster, its three hosts (by environment), their addresses, the CAs of staging and prod."""

    def __init__(self, cluster: SaltCluster, hosts: dict, addresses: dict, cas: dict, old: str, new: str) -> None:
        self.cluster, self.hosts, self.addresses, self.cas = cluster, hosts, addresses, cas
        self.old, self.new = old, new

    def outside(self, environment: str) -> Outside:
        return Outside(self.addresses[environment], self.cas.get(environment))

    def server_pid(self, environment: str) -> str:
        return self.hosts[environment].sh("supervisorctl pid sentry-server").stdout.strip()

    def call(self, environment: str, *args: str):
        ran = self.cluster.salt(MINIONS[environment], *args)
        assert ran.returncode == 0 and isinstance(ran.data, dict), ran.stdout + ran.stderr
        return ran.data[MINIONS[environment]]


@pytest.fixture(scope="module")
def environments(salt_factories, apt_repo, old_sentry_deb, sentry_deb, tmp_path_factory):
    """The example tree applied once to a host per environment, at the older version."""
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    addresses = {environment: host_address(FIRST_HOST_NUMBER + n) for n, environment in enumerate(ENVIRONMENTS)}
    with SaltCluster(
        salt_factories,
        tmp_path_factory.mktemp("env"),  # short: the master's socket paths lie below it
        master_id="sentry-environments",
        first_host_number=FIRST_HOST_NUMBER,
        pillar_tree=EXAMPLE / "pillar",
        master_overrides=master_overrides(),
    ) as cluster:
        added = cluster.add_minions({minion: host_only_pillar(old) for minion in MINIONS.values()})
        hosts = {environment: added[MINIONS[environment]] for environment in ENVIRONMENTS}
        cas = {}
        for environment, host in hosts.items():
            use_apt_repo(host, apt_repo)
            if environment != "dev":
                folder = tmp_path_factory.mktemp(f"tls-{environment}")
                made = make_certificate(folder, addresses[environment])
                cas[environment] = made / "ca.pem"
                tls = {**example_pillar("prod")["nginx"]["tls"], **example_pillar(environment)["nginx"].get("tls", {})}
                put_certificate(host, made, tls)
        deployed = Environments(cluster, hosts, addresses, cas, old, new)
        first = apply_all(cluster)
        for environment in ENVIRONMENTS:
            assert not failed(first[MINIONS[environment]]), (environment, failed(first[MINIONS[environment]]))
        yield deployed


def test_one_apply_gives_each_environment_its_settings(environments):
    cluster, hosts, addresses = environments.cluster, environments.hosts, environments.addresses
    outside = {environment: environments.outside(environment) for environment in ENVIRONMENTS}

    # Each its own title: dev's and staging's from their own files, prod's from prod's.
    for environment in ENVIRONMENTS:
        assert example_pillar(environment)["theme"]["title"] in outside[environment].page(), environment

    # TLS: prod and staging (as prod) answer HTTPS with their certificate, plain HTTP redirects; dev is plain.
    for environment in ("staging", "prod"):
        status, text = outside[environment].request("GET", "/+api")
        assert status == 200 and json.loads(text)["result"]["login"].startswith("https://"), (status, text)
        assert plain_http_answer(addresses[environment]) == (301, f"https://{addresses[environment]}/+api")
    assert outside["dev"].request("GET", "/+api")[0] == 200

    # dev is self-service: a new user registers and makes an index of its own.
    assert outside["dev"].request("PUT", "/dana", {"password": "Dana-dev-pw-1"})[0] == 201
    dana = outside["dev"].login("dana", "Dana-dev-pw-1")
    assert outside["dev"].request("PUT", "/dana/dev", {"bases": ["root/pypi"]}, auth=dana)[0] == 200
    # prod: a user may not register, and prod's own user (made by root from prod's file) may not make an index.
    assert outside["prod"].request("PUT", "/dana", {"password": "Dana-prod-pw-1"})[0] == 403
    ci_password = example_pillar("prod")["bootstrap"]["users"]["ci"]["password"]
    ci = outside["prod"].login("ci", ci_password)
    assert outside["prod"].request("PUT", "/ci/scratch", {"bases": []}, auth=ci)[0] == 403
    assert outside["prod"].request("GET", "/ci/releases")[0] == 200  # root made prod's index from the file

    # Upstreams: staging's own, prod's and dev's PyPI (sentry.common).
    mirrors = {
        environment: json.loads(outside[environment].request("GET", "/root/pypi")[1])["result"]["mirror_url"]
        for environment in ENVIRONMENTS
    }
    assert mirrors["staging"] == example_pillar("staging")["mirror"]["url"]
    assert mirrors["prod"] == mirrors["dev"] == "https://pypi.org/simple/"

    # Backups: prod and staging (as prod) schedule them, dev does not.
    for environment in ENVIRONMENTS:
        scheduled = hosts[environment].sh("ls /etc/cron.d").stdout.split()
        assert any(name.startswith("sentry-backup-") for name in scheduled) == (environment != "dev"), scheduled

    # prod's replicas (no host of theirs here): their pillar as the master compiles it for such an id, prod's
    # file and then theirs.
    shown = cluster.salt_run("pillar.show_pillar", "sentry-prod-replica-1")
    assert shown.returncode == 0 and isinstance(shown.data, dict), shown.stdout + shown.stderr
    replica, prod = shown.data["sentry"], example_pillar("prod")
    assert replica["server"]["master_url"] == example_pillar("prod_replica")["server"]["master_url"], replica
    assert replica["server"]["role"] == "standalone" and replica["server"]["secret"] == prod["server"]["secret"]
    assert replica["backup"]["enabled"] is False and replica["nginx"]["tls"] == prod["nginx"]["tls"], replica

    again = apply_all(cluster)
    for environment in ENVIRONMENTS:
        minion = MINIONS[environment]
        assert not failed(again[minion]) and changed(again[minion]) == {}, (environment, changed(again[minion]))

    # A wrong key in staging's file: staging fails at render naming it; dev and prod apply as before.
    staging_sls = cluster.pillar_root / "sentry" / "staging.sls"
    good = staging_sls.read_text()
    staging_sls.write_text(good + "  backup_typo: true\n")
    try:
        ran = cluster.salt("sentry-*", "state.apply", "sentry", timeout=600)
    finally:
        staging_sls.write_text(good)
    returned = ran.data
    assert isinstance(returned, dict) and set(returned) == set(MINIONS.values()), ran.stdout + ran.stderr
    staging_said = returned[MINIONS["staging"]]
    assert isinstance(staging_said, list) and "sentry:backup_typo" in "\n".join(staging_said), staging_said
    for environment in ("dev", "prod"):
        states = returned[MINIONS[environment]]
        assert isinstance(states, dict) and not failed(states) and changed(states) == {}, (environment, states)


def test_upgrading_staging_leaves_prod_and_dev_as_they_are(environments):
    """The orchestration upgrades the master its pillar names (staging's) and nothing else; with staging's
    version then set in its pillar, as an operator does, an apply of all three changes nothing."""
    cluster, old, new = environments.cluster, environments.old, environments.new
    untouched = ("dev", "prod")
    before = {
        environment: (environments.server_pid(environment), environments.call(environment, "sentry_health.brief"))
        for environment in untouched
    }
    ran = cluster.orchestrate(
        "sentry.upgrade",
        pillar={"sentry": {"upgrade": {"version": new, "master": MINIONS["staging"], "refresh": False}}},
    )
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
    versions = {environment: environments.call(environment, "pkg.version", "sentry") for environment in ENVIRONMENTS}
    assert versions == {"dev": old, "staging": new, "prod": old}, versions
    for environment in untouched:
        after = (environments.server_pid(environment), environments.call(environment, "sentry_health.brief"))
        assert after == before[environment], environment
    # Staging serves its settings and its data on the newer version.
    staging = environments.outside("staging")
    assert example_pillar("staging")["theme"]["title"] in staging.page()
    assert (
        json.loads(staging.request("GET", "/root/pypi")[1])["result"]["mirror_url"]
        == (example_pillar("staging")["mirror"]["url"])
    )
    assert staging.request("GET", "/ci/releases")[0] == 200

    cluster.set_pillar(MINIONS["staging"], host_only_pillar(new))
    again = apply_all(cluster)
    for environment in ENVIRONMENTS:
        minion = MINIONS[environment]
        assert not failed(again[minion]) and changed(again[minion]) == {}, (environment, changed(again[minion]))
