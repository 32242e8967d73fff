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

One ``salt 'sentry-*' state.apply sentry`` deploys all three; then staging
gets a replica, sentry-staging-replica-1 (staging's nodegroup and its
replicas' file; its own pillar names its master by address, and gives its
server staging's CA, as a company CA reaches a server from pillar, through
mirror:ca_certificates, with the host's CA store left as Debian made it).
Then, from
outside (this process, over the bridge): each serves its own theme title;
dev lets a new user register and make an index, prod refuses its own user
an index (only root makes them there); prod and staging answer HTTPS with
their certificates and redirect plain HTTP, dev answers plain HTTP; staging
mirrors its own upstream, prod PyPI; prod and staging schedule backups, dev
does not; staging's replica serves staging's title and data, following its
master over HTTPS; prod's replicas (no host of theirs here) get, as the
master compiles their pillar, prod's settings with their own over them. A
second apply changes nothing anywhere. A wrong key in staging's file fails
staging's hosts alone, naming the key, and leaves dev and prod as they were.

Then ``salt-run state.orchestrate sentry.upgrade`` upgrades staging alone
(its master and replica named in the orchestration's pillar): both run the
newer version, staging with its data and settings, the replica following
it again; prod and dev keep their version, server process and data; with
staging's version then set in the pillar, an apply of all changes nothing.
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
from support.upstream import MAKE_CERTIFICATES, SERVER_CA_FILE

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "example"
ENVIRONMENTS = ("dev", "staging", "prod")
REPLICA = "staging-replica"  # staging's replica, which follows staging's master
MINIONS = {name: f"sentry-{name}-1" for name in (*ENVIRONMENTS, REPLICA)}
FIRST_HOST_NUMBER = 56  # 56, 57, 58, 59: dev, staging, prod, staging's replica


def example_pillar(environment: str) -> dict:
    """What example/pillar/sentry/<environment>.sls says (its sentry: key)."""
    return yaml.safe_load((EXAMPLE / "pillar" / "sentry" / f"{environment}.sls").read_text())["sentry"]


def host_only_pillar(version: str, addresses: dict[str, str]) -> dict[str, dict]:
    """Merged over the tree, minion by minion: what a test host cannot have otherwise. The package from
    the local apt repository; masters offline (no internet); staging's master and replica by address,
    not by the company's names (a replica follows, so it has no offline mode of its own)."""
    package = {"package": {"source": "repo", "version": version}}
    pillars = {name: {"sentry": {**package, "server": {"offline_mode": True}}} for name in ENVIRONMENTS}
    pillars["staging"]["sentry"]["nginx"] = {"replica_addresses": [addresses[REPLICA]]}
    pillars[REPLICA] = {"sentry": {**package, "server": {"master_url": f"https://{addresses['staging']}"}}}
    return {MINIONS[name]: pillar for name, pillar in pillars.items()}


def replica_mirror(staging_ca: Path) -> dict:
    """The replica reaches its master by HTTPS: staging's CA, given to its server alone."""
    return {"ca_certificates": {"example-corp-staging": staging_ca.read_text()}}


def master_overrides() -> dict:
    return yaml.safe_load((EXAMPLE / "master.d" / "sentry-environments.conf").read_text())


def make_certificate(folder: Path, *addresses: str) -> Path:
    """A test CA and a certificate for ``addresses`` signed by it, made as the upstream test host makes its
    own (support.upstream's MAKE_CERTIFICATES, in ``folder``/tls); that folder."""
    san = ",".join(f"IP:{address}" for address in addresses)
    made = MAKE_CERTIFICATES.format(root=folder, address=addresses[0], san=san)
    subprocess.run(["sh", "-c", made], check=True)
    return folder / "tls"


def tls_names(environment: str) -> dict:
    """Where the environment's pillar puts its certificate and key (staging's files override prod's)."""
    return {**example_pillar("prod")["nginx"]["tls"], **example_pillar(environment)["nginx"].get("tls", {})}


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


def assert_applies_without_changes(cluster: SaltCluster) -> None:
    again = apply_all(cluster)
    for name, minion in MINIONS.items():
        assert not failed(again[minion]) and changed(again[minion]) == {}, (name, changed(again[minion]))


class Environments:
    """The cluster, its hosts (by environment, and staging's replica), their addresses, the CAs of staging
    (its master's and its replica's) and prod."""

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
    """The example tree applied once to a host per environment, at the older version; then staging's replica
    added, as an operator adds one to a running master."""
    old, new = deb_version(old_sentry_deb), deb_version(sentry_deb)
    addresses = {name: host_address(FIRST_HOST_NUMBER + n) for n, name in enumerate(MINIONS)}
    pillars = host_only_pillar(old, addresses)
    with SaltCluster(
        salt_factories,
        tmp_path_factory.mktemp("env"),  # short: the master's socket paths lie below it
        master_id="sentry-environments",
        first_host_number=FIRST_HOST_NUMBER,
        pillar_tree=EXAMPLE / "pillar",
        master_overrides=master_overrides(),
    ) as cluster:
        added = cluster.add_minions({MINIONS[name]: pillars[MINIONS[name]] for name in ENVIRONMENTS})
        hosts = {environment: added[MINIONS[environment]] for environment in ENVIRONMENTS}
        # A CA per environment with TLS; staging's one certificate names its master and its replica.
        staging_addresses = (addresses["staging"], addresses[REPLICA])
        made = {
            "staging": make_certificate(tmp_path_factory.mktemp("tls-staging"), *staging_addresses),
            "prod": make_certificate(tmp_path_factory.mktemp("tls-prod"), addresses["prod"]),
        }
        cas = {name: made[name] / "ca.pem" for name in made} | {REPLICA: made["staging"] / "ca.pem"}
        for environment, host in hosts.items():
            use_apt_repo(host, apt_repo)
            if environment in made:
                put_certificate(host, made[environment], tls_names(environment))
        first = apply_all(cluster)
        for environment in ENVIRONMENTS:
            assert not failed(first[MINIONS[environment]]), (environment, failed(first[MINIONS[environment]]))

        pillars[MINIONS[REPLICA]]["sentry"]["mirror"] = replica_mirror(cas[REPLICA])
        replica = cluster.add_minion(MINIONS[REPLICA], pillars[MINIONS[REPLICA]])
        use_apt_repo(replica, apt_repo)
        put_certificate(replica, made["staging"], tls_names("staging"))
        added_replica = cluster.apply(MINIONS[REPLICA], "sentry")[MINIONS[REPLICA]]
        assert not failed(added_replica), failed(added_replica)
        yield Environments(cluster, {**hosts, REPLICA: replica}, addresses, cas, old, new)


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

    # Staging's replica: staging's settings (title, TLS with the same names), following staging's master.
    replica = environments.outside(REPLICA)
    assert example_pillar("staging")["theme"]["title"] in replica.page()
    status = environments.call(REPLICA, "sentry_server.status")  # /+status is for the nodes alone
    assert status["role"] == "replica" and status["master_url"] == f"https://{addresses['staging']}", status
    assert replica.request("GET", "/ci/releases")[0] == 200  # staging's master made it; the replica has it

    # Backups: prod and staging (as prod) schedule them; dev and the replica (its own file) do not.
    for name, host in hosts.items():
        scheduled = host.sh("ls /etc/cron.d").stdout.split()
        assert any(entry.startswith("sentry-backup-") for entry in scheduled) == (name in ("staging", "prod")), (
            name,
            scheduled,
        )

    # prod's replicas (no host of theirs here): their pillar as the master compiles it for such an id, prod's
    # file and then theirs.
    shown = cluster.salt_run("pillar.show_pillar", "sentry-prod-replica-1")
    assert shown.returncode == 0 and isinstance(shown.data, dict), shown.stdout + shown.stderr
    replica, prod = shown.data["sentry"], example_pillar("prod")
    assert replica["server"]["master_url"] == example_pillar("prod_replica")["server"]["master_url"], replica
    assert replica["server"]["role"] == "standalone" and replica["server"]["secret"] == prod["server"]["secret"]
    assert replica["backup"]["enabled"] is False and replica["nginx"]["tls"] == prod["nginx"]["tls"], replica

    assert_applies_without_changes(cluster)

    # A wrong key in staging's file: staging's hosts fail at render naming it; dev and prod apply as before.
    staging_sls = cluster.pillar_root / "sentry" / "staging.sls"
    good = staging_sls.read_text()
    staging_sls.write_text(good + "  backup_typo: true\n")
    try:
        ran = cluster.salt("sentry-*", "state.apply", "sentry", timeout=600)
    finally:
        staging_sls.write_text(good)
    returned = ran.data
    assert isinstance(returned, dict) and set(returned) == set(MINIONS.values()), ran.stdout + ran.stderr
    for name in ("staging", REPLICA):
        said = returned[MINIONS[name]]
        assert isinstance(said, list) and "sentry:backup_typo" in "\n".join(said), (name, said)
    for environment in ("dev", "prod"):
        states = returned[MINIONS[environment]]
        assert isinstance(states, dict) and not failed(states) and changed(states) == {}, (environment, states)


def test_upgrading_staging_leaves_prod_and_dev_as_they_are(environments):
    """The orchestration upgrades the master and replica its pillar names (staging's) and nothing else;
    with staging's version then set in its pillar, as an operator does, an apply of all changes nothing."""
    cluster, old, new = environments.cluster, environments.old, environments.new
    untouched = ("dev", "prod")
    before = {
        environment: (environments.server_pid(environment), environments.call(environment, "sentry_health.brief"))
        for environment in untouched
    }
    ran = cluster.orchestrate(
        "sentry.upgrade",
        pillar={
            "sentry": {
                "upgrade": {
                    "version": new,
                    "master": MINIONS["staging"],
                    "replicas": MINIONS[REPLICA],
                    "refresh": False,
                }
            }
        },
    )
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
    versions = {name: environments.call(name, "pkg.version", "sentry") for name in MINIONS}
    assert versions == {"dev": old, "staging": new, "prod": old, REPLICA: new}, versions
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
    # Its replica follows it again, on the newer version: an index made after the upgrade reaches it.
    root = staging.login("root", example_pillar("staging")["server"]["root_password"])
    assert staging.request("PUT", "/root/after-upgrade", {"bases": []}, auth=root)[0] == 200
    replica_address = environments.addresses[REPLICA]
    environments.hosts[REPLICA].wait_for(
        f"curl -sf --cacert {SERVER_CA_FILE} -o /dev/null https://{replica_address}/root/after-upgrade"
    )
    status = environments.call(REPLICA, "sentry_server.status")
    assert (
        status["role"] == "replica"
        and status["master_uuid"] == environments.call("staging", "sentry_server.status")["uuid"]
    )

    upgraded = host_only_pillar(new, environments.addresses)
    upgraded[MINIONS[REPLICA]]["sentry"]["mirror"] = replica_mirror(environments.cas[REPLICA])
    for name in ("staging", REPLICA):
        cluster.set_pillar(MINIONS[name], upgraded[MINIONS[name]])
    assert_applies_without_changes(cluster)
