"""Pixel stage over the real network path: dcmtk storescu -> dicom-proxy serve -> dcmtk storescp.

A compressed ultrasound object (JPEG 2000 Lossless, RGB 480x640) that the starter rules mask
must arrive still compressed, decode, and have the header band (and the text the detector
finds) filled with black while every other pixel is unchanged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

from dicom_proxy.config import PixelConfig
from dicom_proxy.deidentify.pixels import PixelCleaner
from tests.netpeers import (
    DCMTK_ENV,
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    free_port,
    require_tool,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.network
warnings.filterwarnings("ignore", module="pydicom")

REPO = Path(__file__).resolve().parent.parent
STARTER_RULES = REPO / "conf" / "pixel-rules.toml"


def store_j2k(port: int, path: Path) -> tuple[list[str], str]:
    """storescu proposing JPEG 2000 Lossless (-xv), so the object travels compressed."""
    result = subprocess.run(
        [
            require_tool("storescu"),
            "-v",
            "-xv",
            "-aec",
            "DEID_PROXY",
            "-aet",
            "STORESCU",
            "-to",
            "30",
            "127.0.0.1",
            str(port),
            str(path),
        ],
        capture_output=True,
        check=False,
        env=DCMTK_ENV,
        timeout=120,
    )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return re.findall(r"Received Store Response \(([^)]*)\)", output), output


def test_compressed_us_object_is_masked_end_to_end(tmp_path: Path) -> None:
    source = get_testdata_file("examples_jpeg2k.dcm")
    assert source is not None
    sent_file = tmp_path / "in" / "us.dcm"
    sent_file.parent.mkdir()
    shutil.copyfile(source, sent_file)
    original = dcmread(sent_file)
    assert original.file_meta.TransferSyntaxUID == JPEG2000Lossless and original.Modality == "US"
    before = original.pixel_array.astype(np.int64)  # (480, 640, 3) RGB after the inverse RCT

    archive_port = free_port()
    config = base_config(
        tmp_path,
        [dicom_destination("research", archive_port)],
        deidentify={
            "secret_key_file": str(tmp_path / "secret.key"),
            "options": [],
            "pixels": {"rules_file": str(STARTER_RULES)},
        },
    )
    proxy = Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path)
    with StoreSCP(tmp_path / "archive", archive_port) as scp, proxy:
        statuses, output = store_j2k(proxy.port, sent_file)
        assert statuses == ["Success"], output
        assert "-> Little Endian" not in output  # sent as JPEG 2000, not decompressed
        received = dcmread(scp.complete_files(1, 60)[0])

    assert received.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert received.BurnedInAnnotation == "NO"
    after = received.pixel_array.astype(np.int64)
    band = 48  # starter rule "US screen header band": top 10% of 480 rows
    assert (after[:band] == 0).all()
    preview = PixelCleaner(PixelConfig(rules_file=STARTER_RULES)).preview(original)
    masked = np.zeros(after.shape[:2], dtype=bool)
    for found in preview.boxes:
        masked[found.box.top : found.box.bottom, found.box.left : found.box.right] = True
    assert masked[:band].all() and not masked.all()
    assert (after[masked] == 0).all()
    assert np.array_equal(after[~masked], before[~masked])
    codes = {str(item.CodeValue) for item in received.get("DeidentificationMethodCodeSequence", [])}
    assert "113101" in codes  # Clean Pixel Data Option (PS3.16 CID 7050)


@pytest.mark.parametrize("detect", ["off", "all"])
def test_burned_in_objects_are_refused_without_detection_and_cleaned_with_it(tmp_path: Path, detect: str) -> None:
    from tests.corpus import write_corpus
    from tests.netpeers import pynetdicom_send_files

    burned_in = write_corpus(tmp_path / "ct", patients=1, series_per_study=1, images_per_series=1)[0]
    ds = dcmread(burned_in)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned_in, enforce_file_format=True)
    secondary_capture = get_testdata_file("SC_rgb_rle.dcm")  # Secondary Capture, RLE: high risk by default
    assert secondary_capture is not None
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
    raw = base_config(tmp_path, [folder])  # no rules file
    raw["deidentify"]["pixels"] = {"detect": detect}
    config = write_config(tmp_path / "proxy.toml", raw)
    with Proxy(config, tmp_path) as proxy:
        statuses = pynetdicom_send_files(proxy.port, [burned_in, Path(secondary_capture)])
        if detect == "off":
            assert statuses == [0xC003, 0xC003]
            assert proxy.log().count('"status": "0xC003"') == 2  # audit records of both refusals
        else:  # the detector looked at both: cleaned, not refused
            assert statuses == [0x0000, 0x0000]
            assert not proxy.log().count('"status": "0xC003"')
            assert wait_until(lambda: len(list((tmp_path / "out").rglob("*.dcm"))) == 2, 30)
    if detect == "off":
        assert not list((tmp_path / "spool" / "queues" / "archive").iterdir())
        assert not (tmp_path / "out").exists()
        return
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == 2
    assert all(dcmread(path).BurnedInAnnotation == "NO" for path in written)
