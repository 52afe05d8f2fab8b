"""The README's sending example works on a real study folder (issue 15, item 9): storescu with
conf/storescu.cfg, `+sd +r -nh` sends every file of nested folders in the syntax it has,
past a refused object, to a real node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.netpeers import DCMTK_ENV, Proxy, base_config, require_tool, wait_until, write_config

pytestmark = pytest.mark.network

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# One MR object in several syntaxes (each made a distinct instance), plus a Secondary Capture
# in JPEG 2000 that no pixel rule cleans (refused with 0xC003) in the middle of the study.
SYNTAX_FILES = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm")


def test_readme_storescu_command_sends_a_nested_mixed_syntax_study_past_a_refusal(tmp_path: Path) -> None:
    study = tmp_path / "study"
    expected_syntaxes = set()
    for number, name in enumerate(SYNTAX_FILES):
        ds = dcmread(TEST_FILES / name)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        expected_syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        folder = study / f"series{number % 2}" / "sub"
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{number}.dcm", enforce_file_format=True)
    (study / "series0" / "sc.dcm").write_bytes((TEST_FILES / "JPEG2000.dcm").read_bytes())

    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "archive")}
    raw = base_config(tmp_path, [folder])
    raw["deidentify"]["pixels"] = {"detect": "off"}  # rules only: the secondary capture is refused
    config = write_config(tmp_path / "proxy.toml", raw)
    cfg = Path(__file__).resolve().parent.parent / "conf" / "storescu.cfg"
    with Proxy(config, tmp_path) as proxy:
        sent = subprocess.run(
            [require_tool("storescu"), "-aec", "DEID_PROXY", "-xf", str(cfg), "Default", "+sd", "+r", "-nh", "-v",
             "127.0.0.1", str(proxy.port), str(study)],
            capture_output=True, text=True, env=DCMTK_ENV, timeout=120,
        )
        output = sent.stdout + sent.stderr
        assert output.count("Received Store Response (Success)") == len(SYNTAX_FILES), output
        assert output.count("Received Store Response (Error: CannotUnderstand)") == 1, output
        assert "unable to convert" not in output
        archive = tmp_path / "archive"
        assert wait_until(lambda: len(list(archive.rglob("*.dcm"))) == len(SYNTAX_FILES), 30)
    # Each object arrived and left in the syntax it had: nothing was decompressed on the way.
    arrived = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in archive.rglob("*.dcm")}
    explicit, implicit = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
    # The uncompressed one may be negotiated as either little endian syntax (lossless either way).
    assert {s if s != implicit else explicit for s in arrived} == expected_syntaxes
