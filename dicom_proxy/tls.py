"""DICOM TLS (PS3.15 Annex B.9, the BCP 195 TLS Secure Transport Connection Profile).

The one place that builds `ssl.SSLContext` objects, from the typed `[node.tls]` and
`[destinations.tls]` configuration: the node's listening context (its certificate, and with a
CA bundle, client certificates required and verified: mutual TLS) and one client context per
TLS destination (the destination's certificate verified against a CA bundle or the system
store, its name checked, optionally our client certificate).

Policy (RFC 9325 = BCP 195, sections 3.1.1 and 4.2): TLS 1.2 at least (TLS 1.3 preferred when
both sides have it); for TLS 1.2 only ephemeral ECDHE key exchange with AEAD ciphers (AES-GCM,
ChaCha20-Poly1305); no compression, no renegotiation. That is also what dcmtk's default
"Non-downgrading BCP 195 TLS Profile" offers, so dcmtk peers interoperate.

Certificates are checked when contexts are built (at start, by check-config, and at reload):
a certificate that is expired, not yet valid, or does not match its private key is a problem
named by its key path, so the node refuses to start and a reload keeps the old contexts.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from dicom_proxy.config import Config, DestinationTLSConfig, DicomDestination, NodeTLSConfig

# RFC 9325 4.2: ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2 (TLS 1.3 suites are all AEAD).
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!DSS"

MINIMUM_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSConfigError(Exception):
    """Certificates or keys that cannot be used; each problem names its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ClientTLS:
    """What an SCU needs to open a TLS association: pynetdicom's `tls_args`."""

    context: ssl.SSLContext
    server_name: str

    @property
    def tls_args(self) -> tuple[ssl.SSLContext, str]:
        return self.context, self.server_name


def _harden(context: ssl.SSLContext, minimum: str) -> None:
    context.minimum_version = MINIMUM_VERSIONS[minimum]
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE


def server_context(tls: NodeTLSConfig, key: str = "node.tls") -> ssl.SSLContext:
    """The node's listening context. Raises TLSConfigError naming the key path."""
    problems = certificate_problems(tls.certificate, tls.private_key, f"{key}.certificate")
    if problems:
        raise TLSConfigError(problems)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context, tls.minimum_version)
    _load_chain(context, tls.certificate, tls.private_key, f"{key}.certificate")
    if tls.ca_bundle is not None:
        # Mutual TLS (PS3.15 B.9: peers authenticate each other): no certificate, no association.
        _load_ca(context, tls.ca_bundle, f"{key}.ca_bundle")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: DestinationTLSConfig, host: str, key: str) -> ClientTLS:
    """A destination's context: its certificate verified and its name checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    _harden(context, tls.minimum_version)
    if tls.ca_bundle is not None:
        _load_ca(context, tls.ca_bundle, f"{key}.ca_bundle")
    else:
        context.load_default_certs()
    if tls.certificate is not None and tls.private_key is not None:
        problems = certificate_problems(tls.certificate, tls.private_key, f"{key}.certificate")
        if problems:
            raise TLSConfigError(problems)
        _load_chain(context, tls.certificate, tls.private_key, f"{key}.certificate")
    return ClientTLS(context, tls.server_name or host)


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path, key: str) -> None:
    try:
        context.load_cert_chain(certificate, private_key)
    except ssl.SSLError as exc:
        why = "does not match the private key" if "KEY_VALUES_MISMATCH" in str(exc) else f"unusable ({exc.reason})"
        raise TLSConfigError([f"{key}: {why}"]) from None
    except OSError as exc:
        raise TLSConfigError([f"{key}: cannot read ({exc.strerror})"]) from None


def _load_ca(context: ssl.SSLContext, bundle: Path, key: str) -> None:
    try:
        context.load_verify_locations(cafile=bundle)
    except ssl.SSLError as exc:
        raise TLSConfigError([f"{key}: not a PEM CA bundle ({exc.reason})"]) from None
    except OSError as exc:
        raise TLSConfigError([f"{key}: cannot read ({exc.strerror})"]) from None


def certificate_problems(certificate: Path, private_key: Path, key: str) -> list[str]:
    """Expired, not yet valid or unreadable: what would make a peer refuse us."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except OSError as exc:
        return [f"{key}: cannot read ({exc.strerror})"]
    except ValueError:
        return [f"{key}: not a PEM certificate"]
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        return [f"{key}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"]
    if cert.not_valid_before_utc > now:
        return [f"{key}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"]
    if not private_key.is_file():
        return [f"{key.rsplit('.', 1)[0]}.private_key: file not found"]
    return []


@dataclass(frozen=True)
class Contexts:
    """Every context the node uses, built together so a reload swaps all or none."""

    server: ssl.SSLContext | None
    destinations: dict[str, ClientTLS]


def build(config: Config) -> Contexts:
    """Build every context from `config`; TLSConfigError lists every problem."""
    problems: list[str] = []
    server = None
    if config.node.tls is not None:
        try:
            server = server_context(config.node.tls)
        except TLSConfigError as exc:
            problems.extend(exc.problems)
    destinations: dict[str, ClientTLS] = {}
    for index, destination in enumerate(config.destinations):
        if not isinstance(destination, DicomDestination) or destination.tls is None:
            continue
        try:
            key = f"destinations[{index}].tls"
            destinations[destination.name] = client_context(destination.tls, destination.host, key)
        except TLSConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise TLSConfigError(problems)
    return Contexts(server, destinations)
