"""A local stand-in for PyPI, and a forward proxy, on test hosts of the test bridge.

``Upstream`` serves a static simple index of real wheels (test/upstream-wheels.txt,
fetched once into build/upstream-wheels by ``script/bootstrap test``) over
HTTPS with the host's own nginx, as PyPI does: PEP 503 HTML, or PEP 691 JSON
when the client's Accept header asks for it, links carrying ``#sha256=``. Its
certificate is signed by a throw-away CA made inside the host; a sentry
server trusts it the way a company CA reaches it from pillar, through
``mirror:ca_certificates`` (``Upstream.ca_certificates``), with the sentry
host's own CA store left as Debian made it.

    with new_host("up", address=host_address(100)) as host:
        upstream = Upstream(host, upstream_wheels()).start()
        upstream.url                      # https://10.231.7.110/simple/
        upstream.sha256["six-1.17.0-py2.py3-none-any.whl"]

``ForwardProxy`` is Debian's tinyproxy on a host of its own, logging every
CONNECT it passes on.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from support.hosts import TestHost
from support.paths import REPO

WHEELS_LIST = REPO / "test" / "upstream-wheels.txt"
WHEELS_DIR = REPO / "build" / "upstream-wheels"

ROOT = "/srv/upstream"  # inside the upstream host: tree, TLS files, nginx's config and logs
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
# The file mirror:ca_certificates makes on a sentry host for the default program, sentry-server.
SERVER_CA_FILE = "/etc/sentry/sentry-server-ca.pem"
GENERATED_PREFIX = "generated-project-"


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    path: Path
    project: str  # normalized
    version: str
    requires_python: str | None
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


def read_wheel(path: Path) -> Wheel:
    """Name, version and Requires-Python from the wheel's own METADATA."""
    with zipfile.ZipFile(path) as archive:
        (metadata_name,) = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        metadata = HeaderParser().parsestr(archive.read(metadata_name).decode())
    return Wheel(
        path=path,
        project=normalize(metadata["Name"]),
        version=metadata["Version"],
        requires_python=metadata.get("Requires-Python"),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def upstream_wheels(directory: Path = WHEELS_DIR, pins: Path = WHEELS_LIST) -> list[Wheel]:
    """The pinned wheels (``name==version`` lines of ``pins``), found in ``directory``."""
    wanted = {}
    for line in pins.read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            name, version = requirement.split("==")
            wanted[normalize(name), version] = requirement
    found = {}
    for path in sorted(directory.glob("*.whl")):
        wheel = read_wheel(path)
        if (wheel.project, wheel.version) in wanted:
            found[wheel.project, wheel.version] = wheel
    missing = sorted(wanted[key] for key in wanted.keys() - found.keys())
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not in {directory}: run script/bootstrap test")
    return [found[key] for key in wanted]


def _project_page_html(project: str, links: list[tuple[Wheel, str]]) -> str:
    anchors = []
    for wheel, url in links:
        requires = f' data-requires-python="{html.escape(wheel.requires_python)}"' if wheel.requires_python else ""
        anchors.append(f'<a href="{html.escape(url)}#sha256={wheel.sha256}"{requires}>{wheel.filename}</a><br/>')
    return (
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>Links for {project}</title></head>\n<body><h1>Links for {project}</h1>\n"
        + "\n".join(anchors)
        + "\n</body></html>\n"
    )


def _project_page_json(project: str, links: list[tuple[Wheel, str]]) -> str:
    files = []
    for wheel, url in links:
        entry = {"filename": wheel.filename, "url": url, "hashes": {"sha256": wheel.sha256}}
        if wheel.requires_python:
            entry["requires-python"] = wheel.requires_python
        files.append(entry)
    return json.dumps({"meta": {"api-version": "1.0"}, "name": project, "files": files})


def write_simple_tree(www: Path, base_url: str, wheels: list[Wheel], generated_projects: int = 0) -> None:
    """``www/simple/`` (the project list, one page per project in both formats) and ``www/packages/``.

    ``generated_projects``: that many more names in the project list only (as
    PyPI's list is mostly projects no client asks for); their pages are 404.
    """
    packages = www / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[tuple[Wheel, str]]] = {}
    for wheel in wheels:
        shutil.copyfile(wheel.path, packages / wheel.filename)
        by_project.setdefault(wheel.project, []).append((wheel, f"{base_url}packages/{wheel.filename}"))
    for project, links in by_project.items():
        page = www / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        (page / "index.html").write_text(_project_page_html(project, links))
        (page / "index.json").write_text(_project_page_json(project, links))
    names = sorted(by_project) + [f"{GENERATED_PREFIX}{number:06d}" for number in range(generated_projects)]
    (www / "simple" / "index.html").write_text(
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        "<title>Simple index</title></head>\n<body>\n"
        + "".join(f'<a href="{name}/">{name}</a>\n' for name in names)
        + "</body></html>\n"
    )
    (www / "simple" / "index.json").write_text(
        json.dumps({"meta": {"api-version": "1.0"}, "projects": [{"name": name} for name in names]})
    )


NGINX_CONF = """\
# A fake PyPI: static files, the simple index in the format the client accepts.
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    sendfile on;
    # PEP 691: JSON for a client that accepts it, PEP 503 HTML for anyone else.
    map $http_accept $simple_page {{
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}
    server {{
        listen 443 ssl;
        ssl_certificate {root}/tls/server.pem;
        ssl_certificate_key {root}/tls/server.key;
        root {root}/www;
        location /simple/ {{
            types {{ text/html html; {json} json; }}
            index $simple_page;
            add_header Vary Accept;
        }}
        location /packages/ {{
            types {{ }}
            default_type application/octet-stream;
        }}
    }}
}}
"""

MAKE_CERTIFICATES = """
set -e
mkdir -p {root}/tls && cd {root}/tls
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=sentry upstream test CA' \
    -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN={address} -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName={san}\\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext \
    -out server.pem 2>/dev/null
"""


class Upstream:
    """A fake PyPI served by nginx in ``host`` (which has an address on the test bridge)."""

    def __init__(
        self, host: TestHost, wheels: list[Wheel], generated_projects: int = 0, names: tuple[str, ...] = ()
    ) -> None:
        """``names``: host names its certificate is valid for besides its address (clients map them in /etc/hosts)."""
        if not host.address:
            raise ValueError(f"upstream host {host.name} needs an address on the test bridge")
        self.host, self.wheels, self.generated_projects, self.names = host, wheels, generated_projects, names
        self.address = host.address
        self.base_url = f"https://{self.address}/"
        self.url = f"{self.base_url}simple/"
        self.sha256 = {wheel.filename: wheel.sha256 for wheel in wheels}

    def start(self) -> Upstream:
        """Make the CA and the certificate, write the tree, start nginx; returns once it answers."""
        san = ",".join([f"IP:{self.address}", *(f"DNS:{name}" for name in self.names)])
        self.host.sh(MAKE_CERTIFICATES.format(root=ROOT, address=self.address, san=san))
        write_simple_tree(self.host.path(f"{ROOT}/www"), self.base_url, self.wheels, self.generated_projects)
        self.host.path(f"{ROOT}/nginx.conf").write_text(NGINX_CONF.format(root=ROOT, json=SIMPLE_JSON))
        self.serve()
        return self

    @property
    def ca_pem(self) -> bytes:
        return self.host.path(f"{ROOT}/tls/ca.pem").read_bytes()

    def ca_certificates(self, name: str = "example-corp-upstream") -> dict[str, str]:
        """The ``mirror:ca_certificates`` pillar that makes a sentry server trust this upstream."""
        return {name: self.ca_pem.decode()}

    def serve(self) -> None:
        """Start nginx unless it runs, and wait until it answers."""
        if not self.host.path(f"{ROOT}/nginx.pid").exists():
            self.host.run(["nginx", "-c", f"{ROOT}/nginx.conf"])
        self.host.wait_for(f"curl -fsS -o /dev/null --cacert {ROOT}/tls/ca.pem {self.url}", timeout=20)

    def stop_serving(self) -> None:
        """Stop nginx: the upstream refuses connections, its host is still up (and its logs readable)."""
        if self.host.path(f"{ROOT}/nginx.pid").exists():
            self.host.run(["nginx", "-c", f"{ROOT}/nginx.conf", "-s", "stop"])
            self.host.wait_for(f"! test -e {ROOT}/nginx.pid", timeout=20)

    def disconnect(self) -> None:
        """Take the host off the network: to its clients it is gone (no ARP answer), as a host that is down."""
        self.host.run(["ip", "link", "set", "eth0", "down"])

    def reconnect(self) -> None:
        """Back on the network (the bridge's routes come back with the link)."""
        self.host.run(["ip", "link", "set", "eth0", "up"])
        self.host.wait_for("ip -o link show eth0 | grep -q LOWER_UP", timeout=20)

    def access_log(self) -> str:
        log = self.host.path(f"{ROOT}/access.log")
        return log.read_text(errors="replace") if log.exists() else ""

    def downloads(self, filename: str) -> int:
        """How often the release file was fetched, successfully, so far."""
        return len(re.findall(rf'"GET /packages/{re.escape(filename)} HTTP/[0-9.]+" 200 ', self.access_log()))


class LogTail:
    """What a log file inside a host gained since this object was made."""

    def __init__(self, host: TestHost, path: str) -> None:
        self.file = host.path(path)
        self.offset = self.file.stat().st_size if self.file.exists() else 0

    def new(self) -> str:
        with self.file.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")


def server_requests(log_text: str) -> list[str]:
    """The request lines the server logged ('GET /root/pypi/+simple/six/' of '[req12] GET ...')."""
    return re.findall(r"\[req\d+\] ((?:GET|HEAD|POST|PUT|PATCH|DELETE) \S+)", log_text)


TINYPROXY_CONF = """\
# A company's forward proxy: CONNECT to HTTPS ports, for the test bridge only.
User nobody
Group nogroup
Port {port}
Listen {address}
Timeout 30
MaxClients 20
Allow {network}
ConnectPort 443
LogLevel Info
LogFile "{log}"
PidFile "{pid}"
"""


class ForwardProxy:
    """tinyproxy in ``host``, for clients of ``network``; its log records each CONNECT."""

    DIR = "/srv/proxy"

    def __init__(self, host: TestHost, network: str, port: int = 8888, login: tuple[str, str] | None = None) -> None:
        if not host.address:
            raise ValueError(f"proxy host {host.name} needs an address on the test bridge")
        self.host, self.network, self.port, self.login = host, network, port, login
        userinfo = f"{login[0]}:{login[1]}@" if login else ""
        self.url = f"http://{userinfo}{host.address}:{port}"
        self.log = f"{self.DIR}/tinyproxy.log"

    def start(self) -> ForwardProxy:
        conf = self.host.path(f"{self.DIR}/tinyproxy.conf")
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            TINYPROXY_CONF.format(
                port=self.port, address=self.host.address, network=self.network, log=self.log, pid=f"{self.DIR}/pid"
            )
            + (f"BasicAuth {self.login[0]} {self.login[1]}\n" if self.login else "")
        )
        # It drops to nobody after binding: the log (and pid) must be writable for that user.
        self.host.sh(f"touch {self.log} {self.DIR}/pid && chown nobody:nogroup {self.log} {self.DIR}/pid")
        self.host.sh(f"setsid tinyproxy -d -c {self.DIR}/tinyproxy.conf </dev/null >/dev/null 2>&1 &")
        self.host.wait_for(f"ss -Hltn 'sport = :{self.port}' | grep -q LISTEN", timeout=20)
        return self

    def connects(self) -> list[str]:
        """The ``host:port`` of every CONNECT request the proxy logged so far."""
        text = self.host.path(self.log).read_text(errors="replace")
        return re.findall(r"CONNECT (\S+) HTTP/", text)
