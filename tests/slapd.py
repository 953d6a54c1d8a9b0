"""
A real OpenLDAP C{slapd} for tests: a temporary slapd.conf (mdb backend), a
test tree loaded with slapadd, listening on a free loopback port, stopped by
the test's cleanup. L{SLAPD_MISSING} is the reason to skip when Debian's
slapd is not installed (`make engines` installs it).
"""

from __future__ import annotations

import os
import subprocess

from tests.engineproc import EngineProcess, free_port, start_engine
from tests.engines import find_engine, skip_unless

__all__ = ["SLAPD_MISSING", "SUFFIX", "ROOT_DN", "ROOT_PASSWORD", "TREE", "Slapd",
           "free_port", "start_slapd", "write_certificates"]

SCHEMA_DIR = "/etc/ldap/schema"
SLAPD_MISSING = skip_unless("slapd", "slapadd")

SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"

# The Netscape/Sun mail routing attributes under the names the rfc2307bis
# preset uses, and nisMailAlias for lists. OpenLDAP's misc.schema defines the
# same OIDs, naming the first mailLocalAddress; both names are given here.
MAIL_SCHEMA = """
attributetype ( 2.16.840.1.113730.3.1.13 NAME ( 'mailAlternateAddress' 'mailLocalAddress' )
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
attributetype ( 2.16.840.1.113730.3.1.18 NAME 'mailHost'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
attributetype ( 2.16.840.1.113730.3.1.47 NAME 'mailRoutingAddress'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
objectclass ( 2.16.840.1.113730.3.2.147 NAME 'inetLocalMailRecipient' SUP top AUXILIARY
    MAY ( mailAlternateAddress $ mailHost $ mailRoutingAddress ) )
attributetype ( 1.3.6.1.4.1.42.2.27.2.1.15 NAME 'rfc822MailMember'
    EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.42.2.27.1.2.5 NAME 'nisMailAlias' SUP top STRUCTURAL
    MUST cn MAY rfc822MailMember )
"""

CONFIG = """
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
include {folder}/mail.schema
pidfile {folder}/slapd.pid
argsfile {folder}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {folder}/db
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="cn=smtpd,ou=services,{suffix}" read by * none
"""

# A user (alice) with an alternate address, a user routed elsewhere (bob, by
# mailRoutingAddress), users whose mailHost is node b.example.test (carol;
# erin, with a routing address too) or node a.example.test (dave, written in
# another case with a trailing dot) or the store at 127.0.0.1 (gina), lists of addresses (sales, team), a group
# of DNs (staff, as Active Directory groups are), and the service account.
TREE = """
dn: {suffix}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{suffix}
objectClass: organizationalUnit
ou: people

dn: ou=services,{suffix}
objectClass: organizationalUnit
ou: services

dn: ou=lists,{suffix}
objectClass: organizationalUnit
ou: lists

dn: cn=smtpd,ou=services,{suffix}
objectClass: person
cn: smtpd
sn: service
userPassword: service-secret

dn: uid=alice,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice Example
sn: Example
mail: alice@example.com
mailAlternateAddress: a.example@example.com
userPassword: alice-secret

dn: uid=bob,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: bob
cn: Bob Example
sn: Example
mail: bob@example.com
mailRoutingAddress: bob@branch.example.net
userPassword: bob-secret

dn: uid=carol,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: carol
cn: Carol Example
sn: Example
mail: carol@example.com
mailHost: b.example.test
userPassword: carol-secret

dn: uid=dave,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: dave
cn: Dave Example
sn: Example
mail: dave@example.com
mailHost: A.Example.Test.
userPassword: dave-secret

dn: uid=erin,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: erin
cn: Erin Example
sn: Example
mail: erin@example.com
mailRoutingAddress: erin.archive@example.com
mailHost: b.example.test
userPassword: erin-secret

dn: uid=gina,ou=people,{suffix}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: gina
cn: Gina Example
sn: Example
mail: gina@example.com
mailHost: 127.0.0.1
userPassword: gina-secret

dn: cn=team@example.com,ou=lists,{suffix}
objectClass: nisMailAlias
cn: team@example.com
rfc822MailMember: carol@example.com
rfc822MailMember: dave@example.com
rfc822MailMember: alice@example.com

dn: cn=sales@example.com,ou=lists,{suffix}
objectClass: nisMailAlias
cn: sales@example.com
rfc822MailMember: alice@example.com
rfc822MailMember: bob
rfc822MailMember: partner@elsewhere.example.org

dn: cn=loop1@example.com,ou=lists,{suffix}
objectClass: nisMailAlias
cn: loop1@example.com
rfc822MailMember: loop2@example.com
rfc822MailMember: alice@example.com

dn: cn=loop2@example.com,ou=lists,{suffix}
objectClass: nisMailAlias
cn: loop2@example.com
rfc822MailMember: loop1@example.com

dn: cn=staff,ou=lists,{suffix}
objectClass: groupOfNames
objectClass: extensibleObject
cn: staff
mail: staff@example.com
member: uid=alice,ou=people,{suffix}
member: uid=bob,ou=people,{suffix}
member: uid=gone,ou=people,{suffix}
"""


TLS_CONFIG = """
TLSCACertificateFile {folder}/ca.pem
TLSCertificateFile {folder}/server.pem
TLSCertificateKeyFile {folder}/server.key
"""


def write_certificates(folder: str, hostname: str) -> None:
    """A throw-away CA (ca.pem) and a certificate for C{hostname} (server.pem, server.key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject, issuer, key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slapd test CA")])
    ca = (builder(ca_name, ca_name, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (builder(name, ca_name, key)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    for file_name, data in (
        ("ca.pem", ca.public_bytes(pem)),
        ("server.pem", cert.public_bytes(pem)),
        ("server.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())),
    ):
        with open(os.path.join(folder, file_name), "wb") as f:
            f.write(data)


class Slapd:
    """
    One private slapd: L{start}, L{stop}, and its L{url}. The tree is loaded
    once, offline, by slapadd. With C{tls}, it also offers StartTLS and
    listens for ldaps:// on L{tls_port}, with a certificate for C{localhost}
    issued by the CA in C{ca.pem}.
    """

    def __init__(self, folder: str, tree: str = TREE, tls: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.engine = EngineProcess("slapd", self.port)
        os.makedirs(os.path.join(folder, "db"))
        with open(os.path.join(folder, "mail.schema"), "w") as f:
            f.write(MAIL_SCHEMA)
        self.config = os.path.join(folder, "slapd.conf")
        with open(self.config, "w") as f:
            if tls:
                write_certificates(folder, "localhost")
                f.write(TLS_CONFIG.format(folder=folder))
            f.write(CONFIG.format(schema=SCHEMA_DIR, folder=folder, suffix=SUFFIX,
                                  rootdn=ROOT_DN, rootpw=ROOT_PASSWORD))
        ldif = os.path.join(folder, "tree.ldif")
        with open(ldif, "w") as f:
            f.write(tree.format(suffix=SUFFIX).lstrip())
        subprocess.run([find_engine("slapadd"), "-q", "-f", self.config, "-l", ldif],
                       check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        """The server's ldap:// URL."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str:
        """The PEM file of the CA that issued the server's certificate (with C{tls})."""
        return os.path.join(self.folder, "ca.pem")

    def listen_urls(self) -> str:
        """slapd's -h argument."""
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls_port:
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        return urls

    def start(self) -> None:
        """Run slapd in the foreground (-d 0) and wait until it accepts connections."""
        self.engine.start([find_engine("slapd"), "-d", "0", "-f", self.config,
                           "-h", self.listen_urls()])

    def stop(self) -> None:
        """Stop slapd and wait for it."""
        self.engine.stop()


def start_slapd(case, tree: str = TREE, tls: bool = False) -> Slapd:
    """A started L{Slapd} in a temporary folder, stopped and removed at cleanup."""
    return start_engine(case, "slapd-", lambda folder: Slapd(folder, tree, tls))
