"""Certificates of a local TLS cluster (`geocluster up --tls`), kept in `<state-dir>/tls/`:

    ca.crt, ca.key              a self-signed CA made for this cluster (10 years)
    <member>.crt, <member>.key  one certificate per member for 127.0.0.1 and localhost (90 days)

Clients verify members with `ca.crt` (`redis-cli --tls --cacert <state-dir>/tls/ca.crt`), and
followers verify their leader with it (`--tls-replication yes`). A member certificate is issued
again when it is missing, not from the current CA, or within RENEW_BEFORE of its end; files are
replaced atomically, so the members' reload check (geoserver `tls-reload-interval`) picks up
a renewal without a restart. Keys are written owner-only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
MEMBER_DAYS = 90
RENEW_BEFORE = datetime.timedelta(days=30)
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LocalTls:
    """Where a local TLS cluster's files are; `args` gives a member's geoserver flags."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def cert_file(self, member: str) -> Path:
        return self.directory / f"{member}.crt"

    def key_file(self, member: str) -> Path:
        return self.directory / f"{member}.key"

    def args(self, member: str) -> list[str]:
        return ["--tls-cert-file", str(self.cert_file(member)), "--tls-key-file", str(self.key_file(member)),
                "--tls-ca-cert-file", str(self.ca_file), "--tls-replication", "yes"]

    def ensure(self, members: list[str], now: datetime.datetime | None = None) -> list[str]:
        """Create the CA if missing and (re)issue member certificates that need it; returns
        the members whose certificate was issued."""
        now = now or datetime.datetime.now(datetime.UTC)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        ca_cert, ca_key = self._ca(now)
        issued = self.due(members, now)
        for member in issued:
            self._issue(member, ca_cert, ca_key, now)
        return issued

    def due(self, members: list[str], at: datetime.datetime) -> list[str]:
        """Members whose certificate is missing, not from the current CA, or ends within
        RENEW_BEFORE of `at`."""
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        return [m for m in members if _needs_issue(self.cert_file(m), ca_cert, at)]

    def _ca(self, now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        crt, key_path = self.ca_file, self.directory / "ca.key"
        if crt.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            if isinstance(key, ec.EllipticCurvePrivateKey) and _not_after(cert) > now + RENEW_BEFORE:
                return cert, key
        key = ec.generate_private_key(ec.SECP256R1())
        common = f"geocluster local CA {self.directory.parent.name}"
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(key_path, _key_pem(key), private=True)
        _write(crt, cert.public_bytes(serialization.Encoding.PEM))
        return cert, key

    def _issue(self, member: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               now: datetime.datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in HOSTS]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=MEMBER_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        # the key first: a reload between the two renames fails its key check and keeps the old pair
        _write(self.key_file(member), _key_pem(key), private=True)
        _write(self.cert_file(member), cert.public_bytes(serialization.Encoding.PEM))


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def _needs_issue(path: Path, ca_cert: x509.Certificate, now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return True
    return _not_after(cert) <= now + RENEW_BEFORE


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Atomically: a temp file in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT keeps an old file's mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
