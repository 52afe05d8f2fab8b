"""Throwaway self-signed certificates for tests and the bench (cryptography's x509 builder)."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    name: str,
    valid_from_days: float = -1,
    valid_days: float = 2,
    addresses: tuple[str, ...] = (),
) -> x509.Certificate:
    """A certificate for `key`, valid from now + `valid_from_days` for `valid_days` days;
    `addresses`: IP addresses it is for (subjectAltName, so a TLS client can verify a server)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=valid_from_days)
    builder = x509.CertificateBuilder()
    if addresses:
        names = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return (
        builder
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
