"""DICOM TLS (PS3.15 B.9) on both sides and admission by address, with real peers: dcmtk's
storescu/storescp with +tls, a pynetdicom SCU with a client certificate, the proxy as a real
process. Certificates come from tests/certs.py (throwaway CA)."""

from __future__ import annotations

import datetime
import re
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from pydicom import dcmread
from pynetdicom import AE

from dicom_proxy.config import ConfigError, load_config
from tests.certs import Authority, Pair
from tests.corpus import write_corpus
from tests.netpeers import (
    DCMTK_ENV,
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    echo,
    free_port,
    require_tool,
    storescu,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.network


def storescu_tls(port: int, files: list[Path], *tls: str) -> subprocess.CompletedProcess[str]:
    """storescu over TLS (`tls`: '+tls KEY CERT' or '+tla', then '+cf CA'); one association."""
    return subprocess.run(
        [
            require_tool("storescu"),
            "-aec",
            "DEID_PROXY",
            "-aet",
            "MODALITY",
            "-to",
            "20",
            *tls,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=120,
    )


def tls_port(proxy: Proxy) -> int:
    match = re.search(r"DICOM TLS also on [^:]+:(\d+)", proxy.log())
    assert match, proxy.log()
    return int(match.group(1))


def served_certificate_serial(port: int, ca: Path) -> int:
    """Handshake as a client (no certificate: the node must still show its own first)."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@dataclass(frozen=True)
class Pki:
    ca: Authority
    node: Pair
    archive: Pair
    modality: Pair
    proxy_client: Pair
    untrusted: Pair  # a client certificate from a CA nobody trusts


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    ca = Authority.create(folder, "hospital-ca")
    stranger = Authority.create(folder, "stranger-ca")
    return Pki(
        ca=ca,
        node=ca.issue(folder, "node"),
        archive=ca.issue(folder, "archive"),
        modality=ca.issue(folder, "modality", server=False),
        proxy_client=ca.issue(folder, "proxy-client", server=False),
        untrusted=stranger.issue(folder, "untrusted", server=False),
    )


def test_storescu_tls_to_proxy_mutual_tls_to_storescp_tls_and_refusals(tmp_path: Path, pki: Pki) -> None:
    ca, node, archive_pair = pki.ca, pki.node, pki.archive
    modality, proxy_client, untrusted = pki.modality, pki.proxy_client, pki.untrusted
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=3)
    archive_port = free_port()
    destination = dicom_destination(
        "research",
        archive_port,
        tls={
            "ca_bundle": str(ca.path),
            "certificate": str(proxy_client.certificate),
            "private_key": str(proxy_client.private_key),
        },
    )
    node_tls = {
        "certificate": str(node.certificate),
        "private_key": str(node.private_key),
        "ca_bundle": str(ca.path),
        "port": 0,
    }
    config = base_config(tmp_path, [destination], node={"tls": node_tls})
    proxy = Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path)
    # storescp requires and verifies our client certificate (dcmtk's default, -rc).
    archive = StoreSCP(
        tmp_path / "archive",
        archive_port,
        extra_args=("+tls", str(archive_pair.private_key), str(archive_pair.certificate), "+cf", str(ca.path)),
    )
    with archive as scp, proxy:
        port = tls_port(proxy)
        ok = storescu_tls(
            port, corpus, "+tls", str(modality.private_key), str(modality.certificate), "+cf", str(ca.path)
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        files = scp.complete_files(len(corpus))
        assert {dcmread(f).PatientIdentityRemoved for f in files} == {"YES"}

        # Refused: no client certificate, an untrusted one, clear text on the TLS port.
        anonymous = storescu_tls(port, corpus[:1], "+tla", "+cf", str(ca.path))
        assert anonymous.returncode != 0
        stranger = storescu_tls(
            port, corpus[:1], "+tls", str(untrusted.private_key), str(untrusted.certificate), "+cf", str(ca.path)
        )
        assert stranger.returncode != 0
        assert not echo(port, "DEID_PROXY")  # plain TCP on the TLS port
        # Each refusal is logged with why (by the connection's thread: wait for it).
        for why in ("client sent no certificate", "client certificate not verified", "not TLS"):
            assert wait_until(lambda why=why: why in proxy.log(), 10), (why, proxy.log())

        # A pynetdicom SCU with a client certificate; the clear-text port still serves too.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca.path))
        context.load_cert_chain(str(modality.certificate), str(modality.private_key))
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="DEID_PROXY", tls_args=(context, "127.0.0.1"))
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
        assert echo(proxy.port, "DEID_PROXY")
        assert proxy.terminate() == 0
    assert len(list((tmp_path / "spool" / "quarantine" / "research").glob("*.dcm"))) == 0


def test_a_destination_whose_certificate_is_not_trusted_is_not_sent_to(tmp_path: Path, pki: Pki) -> None:
    archive_pair = pki.archive
    stranger = Authority.create(tmp_path / "other", "other-ca")
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=1)
    archive_port = free_port()
    destination = dicom_destination("research", archive_port, tls={"ca_bundle": str(stranger.path)})
    proxy = Proxy(write_config(tmp_path / "proxy.toml", base_config(tmp_path, [destination])), tmp_path)
    archive = StoreSCP(
        tmp_path / "archive",
        archive_port,
        extra_args=("+tls", str(archive_pair.private_key), str(archive_pair.certificate), "-ic"),
    )
    with archive as scp, proxy:
        assert storescu(proxy.port, corpus).statuses == ["Success"]
        assert wait_until(lambda: "connection or TLS handshake failed" in proxy.log(), 30), proxy.log()
        assert "CERTIFICATE_VERIFY_FAILED" in proxy.log()
        assert scp.files() == []
        assert len(list((tmp_path / "spool" / "queues" / "research").glob("*.dcm"))) == 1  # kept, retried


def test_certificates_reload_on_sighup_and_a_bad_one_is_refused(tmp_path: Path, pki: Pki) -> None:
    ca, node = pki.ca, pki.node
    node_tls = {"certificate": str(node.certificate), "private_key": str(node.private_key)}
    config = base_config(tmp_path, [dicom_destination("research", free_port())], node={"tls": node_tls})
    with Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path) as proxy:
        first = served_certificate_serial(proxy.port, ca.path)
        renewed = ca.issue(tmp_path / "renewed", "node")
        node.certificate.write_bytes(renewed.certificate.read_bytes())
        node.private_key.write_bytes(renewed.private_key.read_bytes())
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: served_certificate_serial(proxy.port, ca.path) != first, 20)
        second = served_certificate_serial(proxy.port, ca.path)

        expired = ca.issue(tmp_path / "expired", "node", valid_from=-datetime.timedelta(days=3))
        node.certificate.write_bytes(expired.certificate.read_bytes())
        node.private_key.write_bytes(expired.private_key.read_bytes())
        proxy.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "node.tls.certificate: expired on" in proxy.log(), 20), proxy.log()
        assert "reload rejected" in proxy.log()
        assert served_certificate_serial(proxy.port, ca.path) == second  # the old one stays


def test_expired_mismatched_or_missing_certificates_are_config_errors(tmp_path: Path, pki: Pki) -> None:
    ca, node, other = pki.ca, pki.node, pki.archive
    expired = ca.issue(tmp_path / "expired", "old", valid_from=-datetime.timedelta(days=3))
    cases = {
        "expired on": {"certificate": str(expired.certificate), "private_key": str(expired.private_key)},
        "does not match the private key": {"certificate": str(node.certificate), "private_key": str(other.private_key)},
        "cannot read": {"certificate": str(tmp_path / "missing.crt"), "private_key": str(node.private_key)},
    }
    for message, node_tls in cases.items():
        path = write_config(
            tmp_path / "bad.toml", base_config(tmp_path, [dicom_destination("d", 1)], node={"tls": node_tls})
        )
        with pytest.raises(ConfigError) as raised:
            load_config(path)
        assert any(p.startswith("node.tls.certificate: ") and message in p for p in raised.value.problems), (
            raised.value.problems
        )
    # `serve` refuses to start with one `config error:` line and exit status 2.
    path = write_config(
        tmp_path / "bad.toml", base_config(tmp_path, [dicom_destination("d", 1)], node={"tls": cases["expired on"]})
    )
    result = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "config error: node.tls.certificate: expired on" in result.stderr


@pytest.mark.parametrize(("networks", "admitted"), [(["127.0.0.0/8"], True), (["10.0.0.0/8", "192.0.2.0/24"], False)])
def test_admission_by_network_address(tmp_path: Path, networks: list[str], admitted: bool) -> None:
    config = base_config(tmp_path, [dicom_destination("d", free_port())], node={"allowed_networks": networks})
    with Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path) as proxy:
        assert echo(proxy.port, "DEID_PROXY") is admitted
        if not admitted:
            assert wait_until(lambda: "peer address not in node.allowed_networks" in proxy.log(), 10)
            assert '"event": "connection_rejected"' in proxy.log()
