"""pydicom's example files (CT, MR, RT, SR, multi-frame, palette, overlays, JPEG...) all
de-identify, and dciodvfy (dicom3tools) reports no new errors on the output."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus
from tests.dicomfactory import TEST_FILES, engine, read

ALL_OPTIONS = (
    "retain_safe_private", "retain_device_identity", "retain_institution_identity",
    "retain_patient_characteristics", "retain_longitudinal_modified_dates", "clean_descriptors",
    "clean_structured_content", "clean_graphics",
)
ENGINES = {"basic": engine(), "options": engine(*ALL_OPTIONS)}

# Inputs that are not complete objects: they must be refused (fail closed), never forwarded.
INCOMPLETE = {
    "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "meta_missing_tsyntax.dcm", "no_meta.dcm",
    "rtstruct.dcm",  # no transfer syntax in its meta
    "JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",  # no Study Instance UID
    "UN_sequence.dcm", "empty_charset_LEI.dcm", "nested_priv_SQ.dcm", "no_meta_group_length.dcm",
    "priv_SQ.dcm",  # fragments without SOP Class UID
    "MR_truncated.dcm", "rtplan_truncated.dcm",  # truncated: refused by codec's structural check
    "badVR.dcm",  # Number of Frames (IS) "1A" is not a number: text in a number field is refused
}
# Secondary captures (Conversion Type WSD: high risk) whose pixels do not decode (a misplaced JPEG
# marker, a broken JPEG 2000 stream): no detector can look at them, so they are refused (0xC003).
UNDECODABLE_CAPTURES = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}
# dciodvfy cannot read back pydicom's deflated output ("Tag read failed" at a random tag), so
# the deflated example is checked by parsing only. Left open in the report.
NOT_COMPARED = {"image_dfl.dcm"}
FILES = sorted(path.name for path in TEST_FILES.glob("*.dcm"))


def _errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    # Values (UIDs, lengths) change by design; compare the kind and place of each error.
    return {re.sub(r"<[0-9.]+>", "<value>", re.sub(r"\s+", " ", line)) for line in lines}


def test_dciodvfy_is_installed() -> None:
    assert shutil.which("dciodvfy"), "dciodvfy (Debian dicom3tools) is required"


def test_examples_are_found() -> None:
    assert len(FILES) >= 70


@pytest.mark.parametrize("which", sorted(ENGINES))
@pytest.mark.parametrize("name", FILES)
def test_example(name: str, which: str, tmp_path: Path) -> None:
    source = TEST_FILES / name
    if name in INCOMPLETE:
        with pytest.raises(Refused):
            ENGINES[which].deidentify_file(source)
        return
    if name in UNDECODABLE_CAPTURES:
        with pytest.raises(Refused) as info:
            ENGINES[which].deidentify_file(source)
        assert info.value.status == StoreStatus.PIXELS_NOT_CLEANABLE and "decode" in info.value.reason
        return
    result = ENGINES[which].deidentify_file(source)
    out = read(result.encoded)
    assert out.PatientIdentityRemoved == "YES"
    assert out.SOPInstanceUID == result.sop_instance_uid
    if name in NOT_COMPARED:
        return
    output = tmp_path / "out.dcm"
    output.write_bytes(result.encoded)
    new = _errors(output) - _errors(source)
    assert not new, f"new dciodvfy errors: {sorted(new)}"
