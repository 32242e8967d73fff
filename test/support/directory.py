"""A company directory in a test host: Debian's slapd with people, a service account and groups.

slapd (in every host root, test/hostroot/packages) runs with a configuration
of the test's own (slapd.conf, an mdb database under /tmp), never the
package's. Anonymous clients may only bind: reading needs a bind, as the
service account ``cn=sentry,ou=services,...`` does for sentry's searches.
Passwords are stored in clear (slapd compares them on bind), each user's
password is ``<Name>-ldap-pw-<n>``. It answers ldap:// (``url``) and
ldaps:// (``tls_url``), whose certificate a CA of its own signs (``ca_pem``).
"""

from __future__ import annotations

from dataclasses import dataclass

from support.hosts import TestHost
from support.upstream import MAKE_CERTIFICATES

SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
BIND_DN = f"cn=sentry,ou=services,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"
HOME = "/tmp/slapd"
PORT = 389
TLS_PORT = 636  # ldaps://, with a certificate from a test CA of the directory's own
OUS = ("people", "groups", "services")


@dataclass(frozen=True)
class Person:
    uid: str
    password: str

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE}"


class Directory:
    """slapd in ``host``: ``people`` and ``groups`` (name -> member uids), the service account's ``bind_password``."""

    def __init__(self, host: TestHost, people: list[Person], groups: dict[str, list[str]], bind_password: str):
        self.host, self.people, self.groups, self.bind_password = host, people, groups, bind_password
        self.url = f"ldap://{host.address}:{PORT}"
        self.tls_url = f"ldaps://{host.address}:{TLS_PORT}"

    def _config(self) -> str:
        return f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {HOME}/slapd.pid
argsfile {HOME}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw admin-{self.bind_password}
directory {HOME}/db
TLSCACertificateFile {HOME}/tls/ca.pem
TLSCertificateFile {HOME}/tls/server.pem
TLSCertificateKeyFile {HOME}/tls/server.key
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
"""

    def _entries(self) -> str:
        entries = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
            *(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}" for ou in OUS),
            f"dn: {BIND_DN}\nobjectClass: person\ncn: sentry\nsn: sentry\nuserPassword: {self.bind_password}",
        ]
        for person in self.people:
            entries.append(
                f"dn: {person.dn}\nobjectClass: inetOrgPerson\nuid: {person.uid}\ncn: {person.uid}\n"
                f"sn: {person.uid}\nmail: {person.uid}@example.org\nuserPassword: {person.password}"
            )
        for name, members in self.groups.items():
            lines = "\n".join(f"member: uid={uid},{PEOPLE}" for uid in members)
            entries.append(f"dn: cn={name},{GROUPS}\nobjectClass: groupOfNames\ncn: {name}\n{lines}")
        return "\n\n".join(entries) + "\n"

    def start(self) -> Directory:
        host = self.host
        host.run(["mkdir", "-p", f"{HOME}/db"])
        host.sh(MAKE_CERTIFICATES.format(root=HOME, address=host.address, san=f"IP:{host.address}"))
        host.path(f"{HOME}/slapd.conf").write_text(self._config())
        host.path(f"{HOME}/entries.ldif").write_text(self._entries())
        host.path(f"{HOME}/bind.pw").write_text(self.bind_password)  # ldapwhoami -y: no newline
        host.run(["slapadd", "-f", f"{HOME}/slapd.conf", "-l", f"{HOME}/entries.ldif"])
        self.resume()
        return self

    def resume(self) -> None:
        """Start slapd (again) on the database as it is."""
        listen = f"ldap://0.0.0.0:{PORT}/ ldaps://0.0.0.0:{TLS_PORT}/"
        self.host.run(["slapd", "-f", f"{HOME}/slapd.conf", "-h", listen])
        self.host.wait_for(f"ldapwhoami -x -H ldap://127.0.0.1:{PORT} -D {BIND_DN} -y {HOME}/bind.pw", timeout=30)

    @property
    def ca_pem(self) -> bytes:
        """The CA that signs the ldaps:// certificate, PEM."""
        return self.host.path(f"{HOME}/tls/ca.pem").read_bytes()

    def stop(self) -> None:
        self.host.sh(f"kill $(cat {HOME}/slapd.pid); while test -e {HOME}/slapd.pid; do sleep 0.1; done")
