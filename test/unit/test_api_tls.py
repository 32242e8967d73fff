"""sentry_api over HTTPS: a master's certificate is checked against the instance's CA file, else the host's store.

A real TLS server on loopback (Python's own), with a certificate of a throw-away
CA made by openssl as the test upstream makes its own; the CA is in a file of
the test's, as mirror:ca_certificates puts it in /etc/sentry/<program>-ca.pem.
"""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading

import pytest
from salt.exceptions import CommandExecutionError
from support.loading import load
from support.upstream import MAKE_CERTIFICATES

api = load("_utils/sentry_api.py", "sentry_api_tls_unit")

STATUS = {"result": {"role": "MASTER", "serial": 7, "uuid": "master-uuid"}}


class StatusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(STATUS if self.path == "/+status" else {"message": "no such page"}).encode()
        self.send_response(200 if self.path == "/+status" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    """(URL, CA file) of an HTTPS server on loopback whose certificate the host's store does not vouch for."""
    folder = tmp_path_factory.mktemp("tls-master")
    made = MAKE_CERTIFICATES.format(root=folder, address="127.0.0.1", san="IP:127.0.0.1")
    subprocess.run(["sh", "-c", made], check=True)
    tls = folder / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "server.pem", tls / "server.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", str(tls / "ca.pem")
    finally:
        server.shutdown()
        server.server_close()


def test_the_instances_ca_file_vouches_for_the_master(master):
    url, ca_file = master
    assert api.master_status(url, ca_file) == STATUS["result"]
    assert api.request("GET", f"{url}/+nothing", ca_file=ca_file)[0] == 404


def test_without_it_the_hosts_store_refuses_the_master(master):
    url, _ = master
    with pytest.raises(CommandExecutionError, match="CERTIFICATE_VERIFY_FAILED"):
        api.master_status(url)


def test_a_plain_http_url_ignores_the_ca_file():
    # Nothing listens on port 9 (discard): the request is made, no TLS context is built for it.
    with pytest.raises(CommandExecutionError, match="does not answer"):
        api.request("GET", "http://127.0.0.1:9/+status", ca_file="/nonexistent/ca.pem")
