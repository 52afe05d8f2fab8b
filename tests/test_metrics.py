"""Metrics over HTTP after a real loopback study: dcmtk storescu -> dicom-proxy serve
(subprocess, [metrics] on) -> dcmtk storescp. The scrape must count exactly what was sent,
refused and delivered, in both processes (receiver and forwarder), and read queue depth and
destination state from the spool while the archive is down."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.filereader import read_file_meta_info

from dicom_proxy.secret import fingerprint, load_key
from tests.corpus import PATIENTS, ct_image, write_corpus
from tests.netpeers import (
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    echo,
    free_port,
    storescu,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.network

REPO = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


RULES = """
[[rules]]
name = "ct-corner"
match.Modality = "CT"
rectangles = [ { x = 0, y = 0, width = 8, height = 4 } ]
"""


def metrics_proxy(tmp_path: Path, archive_port: int, **overrides: object) -> Proxy:
    (tmp_path / "rules.toml").write_text(RULES)
    overrides.setdefault(
        "deidentify",
        # rules only (detection off): the US objects below are refused, so refusals are counted
        {
            "secret_key_file": str(tmp_path / "secret.key"),
            "pixels": {"rules_file": str(tmp_path / "rules.toml"), "detect": "off"},
        },
    )
    config = base_config(
        tmp_path,
        [dicom_destination("research", archive_port)],
        metrics={"bind": "127.0.0.1", "port": 0},
        **overrides,
    )
    return Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path)


def http_port(proxy: Proxy) -> int:
    match = re.search(r"metrics and status page on http://[^:]+:(\d+)/", proxy.log())
    assert match, proxy.log()
    return int(match.group(1))


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def us_objects(folder: Path, count: int) -> list[Path]:
    """Ultrasound objects carrying PHI: high risk, no pixel rule -> refused with 0xC003."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ds = ct_image(PATIENTS[1], "1.2.826.0.1.3680043.8.498.77." + str(i + 1), "1.2.3.4.5.6.7." + str(i + 1), i + 1)
        ds.Modality = "US"
        path = folder / f"us{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dataset_bytes(paths: Iterable[Path]) -> int:
    """What a C-STORE carries of each file: everything after the File Meta Information
    (preamble 128 + "DICM" 4 + the group length element 12 + the group length's value)."""
    return sum(
        p.stat().st_size - (128 + 4 + 12 + int(read_file_meta_info(p).FileMetaInformationGroupLength)) for p in paths
    )


def test_scrape_counts_what_was_sent_refused_and_delivered(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=1, images_per_series=2)
    refused = us_objects(tmp_path / "us", 2)
    archive_port = free_port()
    with StoreSCP(tmp_path / "archive", archive_port) as scp, metrics_proxy(tmp_path, archive_port) as proxy:
        port = http_port(proxy)
        sent = storescu(proxy.port, [*corpus, *refused])
        assert sent.statuses == ["Success"] * len(corpus) + ["Error: CannotUnderstand"] * len(refused), sent.output
        assert not echo(proxy.port, "NOT_THE_PROXY")  # rejected: called AE title
        scp.complete_files(len(corpus))
        assert wait_until(
            lambda: value(scrape(port), "dicom_proxy_objects_forwarded_total", destination="research") == len(corpus),
            30,
        )
        samples = scrape(port)

        received = len(corpus) + len(refused)
        assert value(samples, "dicom_proxy_objects_received_total") == received
        assert value(samples, "dicom_proxy_received_bytes_total") == dataset_bytes([*corpus, *refused])
        assert value(
            samples, "dicom_proxy_objects_refused_total", status="0xC003", reason_class="pixels_not_cleanable"
        ) == len(refused)
        assert value(samples, "dicom_proxy_objects_spooled_total") == len(corpus)
        spooled_bytes = value(samples, "dicom_proxy_spooled_bytes_total")
        assert spooled_bytes > 0
        assert value(samples, "dicom_proxy_objects_quarantined_total", destination="research") == 0
        assert value(samples, "dicom_proxy_associations_total", result="accepted", cause="") == 1
        assert (
            value(samples, "dicom_proxy_associations_total", result="rejected", cause="called_ae_title_not_recognized")
            == 1
        )
        # Every object went through plan and pixels; the refused ones stopped there.
        for stage, count in (
            ("plan", received),
            ("pixels", received),
            ("tags", len(corpus)),
            ("encode", len(corpus)),
            ("verify", len(corpus)),
        ):
            assert value(samples, "dicom_proxy_deidentify_stage_seconds_count", stage=stage) == count, stage
        assert value(samples, "dicom_proxy_delivery_latency_seconds_count", destination="research") == len(corpus)
        assert value(samples, "dicom_proxy_destination_up", destination="research") == 1
        assert value(samples, "dicom_proxy_spool_queue_depth", destination="research") == 0
        assert value(samples, "dicom_proxy_pixel_masks_total", source="rule:ct-corner") == len(corpus)
        key = fingerprint(load_key(tmp_path / "secret.key"))
        assert value(samples, "dicom_proxy_key_info", fingerprint=key) == 1

        # Archive down: the object waits in the queue, the destination shows down.
        scp.stop()
        late = write_corpus(tmp_path / "late", patients=1, series_per_study=1, images_per_series=1)
        assert storescu(proxy.port, late).statuses == ["Success"]

        def down() -> bool:
            s = scrape(port)
            return (
                value(s, "dicom_proxy_destination_up", destination="research") == 0
                and value(s, "dicom_proxy_delivery_retries_total", destination="research") >= 1
            )

        assert wait_until(down, 30), proxy.log()
        samples = scrape(port)
        assert value(samples, "dicom_proxy_spool_queue_depth", destination="research") == 1
        queued = [p.stat().st_size for p in (tmp_path / "spool" / "queues" / "research").glob("*.dcm")]
        assert value(samples, "dicom_proxy_spool_queue_bytes", destination="research") == sum(queued)
        assert value(samples, "dicom_proxy_spooled_bytes_total") - spooled_bytes == sum(queued)
        assert value(samples, "dicom_proxy_spool_oldest_entry_age_seconds", destination="research") > 0
        assert value(samples, "dicom_proxy_destination_consecutive_failures", destination="research") >= 1

        with StoreSCP(tmp_path / "archive2", archive_port) as again:
            again.complete_files(1)
            assert wait_until(
                lambda: value(scrape(port), "dicom_proxy_destination_up", destination="research") == 1, 30
            )
        samples = scrape(port)
        assert value(samples, "dicom_proxy_objects_forwarded_total", destination="research") == len(corpus) + 1
        assert value(samples, "dicom_proxy_spool_queue_depth", destination="research") == 0
        assert value(samples, "dicom_proxy_spool_oldest_entry_age_seconds", destination="research") == 0
        (REPO / "var" / "artifacts").mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            (REPO / "var" / "artifacts" / "metrics-scrape.txt").write_bytes(response.read())
        # Every metric the sample Grafana dashboard queries exists.
        names = {name for name, _ in samples}
        dashboard = (REPO / "conf" / "grafana-dashboard.json").read_text()
        for queried in set(re.findall(r"dicom_proxy_[a-z_]+", dashboard)):
            assert queried in names, queried
        assert proxy.terminate() == 0
