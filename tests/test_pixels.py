"""Pixel stage (PS3.15 E.3.1 Clean Pixel Data): masking, re-encoding, fail closed.

Every test compares decoded pixels before and after: rectangles hold only the fill value, all
other pixels are unchanged (byte for byte for lossless syntaxes; against the decoded original
for lossy ones, which must then be stored uncompressed).
"""

from __future__ import annotations

import copy
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_proxy import part10
from dicom_proxy.config import ConfigError, PixelConfig
from dicom_proxy.deidentify.pixels import PixelCleaner, PixelOutcome
from dicom_proxy.deidentify.pixels.base import default_fill
from dicom_proxy.deidentify.pixels.rules import Box
from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus

warnings.filterwarnings("ignore", module="pydicom")

# One rule matching every object (SOP Class UID is always present), two rectangles: one in
# fractions, one in pixels (both fit a 10 x 10 image, the smallest example used).
ALL_RULE = """
[[rules]]
name = "everything"
match.SOPClassUID = { regex = ".*" }
rectangles = [
  { x = 0.1, y = 0.05, width = 0.5, height = 0.2, units = "fraction" },
  { x = 2, y = 6, width = 4, height = 3 },
]
"""

ELE = ExplicitVRLittleEndian

# pydicom example file -> transfer syntax expected after masking.
EXAMPLES: dict[str, UID] = {
    # native little endian: masked in place, syntax kept
    "CT_small.dcm": ELE,  # MONOCHROME2 signed 16
    "MR_small_implicit.dcm": ImplicitVRLittleEndian,
    "image_dfl.dcm": DeflatedExplicitVRLittleEndian,  # deflate, 8-bit 512x512
    "examples_overlay.dcm": ELE,  # 12 of 16 bits, overlay group
    "examples_palette.dcm": ELE,  # PALETTE COLOR, US
    "examples_rgb_color.dcm": ELE,  # US RGB
    "SC_ybr_full_422_uncompressed.dcm": ELE,  # YBR_FULL_422 subsampled native
    "liver_1frame.dcm": ELE,  # Bits Allocated 1
    "rtdose.dcm": ImplicitVRLittleEndian,  # 32-bit, 15 frames
    # big endian (retired): to Explicit VR Little Endian
    "MR_small_bigendian.dcm": ELE,
    "ExplVR_BigEnd.dcm": ELE,  # US RGB planar configuration 1
    "liver_expb_1frame.dcm": ELE,
    # RLE: re-encoded as RLE (32-bit: pydicom cannot encode, stored uncompressed)
    "MR_small_RLE.dcm": RLELossless,
    "SC_rgb_rle.dcm": RLELossless,
    "SC_rgb_rle_16bit_2frame.dcm": RLELossless,
    "SC_rgb_rle_32bit_2frame.dcm": ELE,
    "rtdose_rle.dcm": ELE,
    # JPEG-LS
    "MR_small_jpeg_ls_lossless.dcm": JPEGLSLossless,
    "JPEGLSNearLossless_16.dcm": ELE,
    "SC_rgb_jls_lossy_line.dcm": ELE,
    # JPEG 2000
    "MR_small_jp2klossless.dcm": JPEG2000Lossless,
    "examples_jpeg2k.dcm": JPEG2000Lossless,  # US YBR_RCT
    "GDCMJ2K_TextGBR.dcm": JPEG2000Lossless,
    "J2K_pixelrep_mismatch.dcm": JPEG2000Lossless,  # header says signed, stream unsigned
    "693_J2KI.dcm": ELE,  # lossy, signed 14-bit
    "SC_rgb_gdcm_KY.dcm": ELE,  # lossy RGB
    # JPEG: no encoder; lossy ones are never recompressed
    "SC_rgb_jpeg_dcmtk.dcm": ELE,  # baseline YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": ELE,  # baseline YBR_FULL_422
    "SC_rgb_dcmtk_+eb+cr.dcm": ELE,  # baseline RGB
    "examples_ybr_color.dcm": ELE,  # US cine, 30 frames, YBR_FULL_422
    "JPGExtended.dcm": ELE,  # 12-bit extended
    "SC_rgb_jpeg_gdcm.dcm": ELE,  # lossless process 14 SV1
}

LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
}


def make_cleaner(tmp_path: Path, rules: str = ALL_RULE, **options: Any) -> PixelCleaner:
    """Rules plus, unless `detect` says otherwise, the default detector (as configured)."""
    path = tmp_path / "rules.toml"
    path.write_text(rules, encoding="utf-8")
    return PixelCleaner(PixelConfig(rules_file=path, **options))


def boxes_of(cleaner: PixelCleaner, ds: Dataset) -> tuple[Box, ...]:
    """Every box any source (rules, detector) will fill, as the preview reports them."""
    preview = cleaner.preview(ds)
    assert preview.refusal is None, preview.refusal
    return tuple(f.box for f in preview.boxes)


def example(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom example {name} is not installed"
    return dcmread(path)


def decoded(ds: Dataset) -> np.ndarray:
    """All frames as (frames, rows, columns, samples), in the stored colour space."""
    array, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, as_rgb=False)
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    return array.reshape(frames, int(ds.Rows), int(ds.Columns), samples).astype(np.int64)


def round_trip(ds: Dataset) -> Dataset:
    """Encode through the engine's Part 10 writer and read back, as a receiver would."""
    return dcmread(BytesIO(b"".join(part10.encode(ds).parts)))


def box_mask(rows: int, columns: int, boxes: tuple[Box, ...], pairs: bool = False) -> np.ndarray:
    mask = np.zeros((rows, columns), dtype=bool)
    for b in boxes:
        left, right = (b.left // 2 * 2, (b.right + 1) // 2 * 2) if pairs else (b.left, b.right)
        mask[b.top : b.bottom, left:right] = True
    return mask


def expected_fill(ds: Dataset) -> tuple[int, ...]:
    photometric = str(ds.PhotometricInterpretation)
    if photometric in ("YBR_RCT", "YBR_ICT"):
        photometric = "RGB"  # the decoder undoes the JPEG 2000 colour transform
    return default_fill(
        photometric,
        int(ds.get("SamplesPerPixel") or 1),
        int(ds.BitsStored),
        ds.PixelRepresentation == 1,
    )


def as_stored_after(before: np.ndarray, syntax: UID, photometric: str, out: Dataset) -> np.ndarray:
    """A lossy YBR original is stored uncompressed as a viewer shows it (RGB): convert the
    original the same way before comparing."""
    if syntax in LOSSY_SYNTAXES and photometric.startswith("YBR_FULL"):
        assert out.PhotometricInterpretation == "RGB"
        return convert_color_space(before.astype(np.uint8), "YBR_FULL", "RGB").astype(np.int64)
    return before


def assert_masked(before: np.ndarray, after: np.ndarray, mask: np.ndarray, fill: tuple[int, ...]) -> None:
    assert after.shape == before.shape
    assert mask.any()
    inside = after[:, mask, :]
    assert np.array_equal(inside, np.broadcast_to(np.asarray(fill), inside.shape)), "fill"
    assert np.array_equal(after[:, ~mask, :], before[:, ~mask, :]), "pixels outside the masks changed"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_files_are_masked_and_everything_else_is_unchanged(tmp_path: Path, name: str) -> None:
    cleaner = make_cleaner(tmp_path)
    ds = example(name)
    original_syntax = UID(ds.file_meta.TransferSyntaxUID)
    sop_instance_uid = ds.SOPInstanceUID
    lossy_flag = ds.get("LossyImageCompression")
    before = decoded(ds)
    was_422 = ds.PhotometricInterpretation == "YBR_FULL_422" and not original_syntax.is_compressed
    ds_photometric = str(ds.PhotometricInterpretation)
    boxes = boxes_of(cleaner, ds)

    outcome = cleaner.clean(ds)
    out = round_trip(ds)

    assert (outcome.cleaned, outcome.rules) == (True, ("everything",))
    assert outcome.transfer_syntax_changed == (EXAMPLES[name] != original_syntax)
    assert outcome.sources == ("rules", "opencv")
    assert out.file_meta.TransferSyntaxUID == EXAMPLES[name]
    assert out.SOPInstanceUID == sop_instance_uid
    assert out.BurnedInAnnotation == "NO"
    assert out.get("LossyImageCompression") == lossy_flag
    if original_syntax in LOSSY_SYNTAXES:
        assert not UID(out.file_meta.TransferSyntaxUID).is_compressed, "no second lossy step"
    before = as_stored_after(before, original_syntax, ds_photometric, out)
    assert_masked(before, decoded(out), box_mask(out.Rows, out.Columns, boxes, was_422), expected_fill(out))


def test_native_masking_keeps_every_byte_outside_the_rectangles(tmp_path: Path) -> None:
    """Unused high bits (examples_overlay: 12 of 16 bits) are kept, not sign-normalised."""
    cleaner = make_cleaner(tmp_path)
    ds = example("examples_overlay.dcm")
    raw = bytearray(ds.PixelData)
    raw[1] |= 0xF0  # high bits outside Bits Stored, pixel (0, 0) is outside the masks
    ds.PixelData = bytes(raw)
    boxes = boxes_of(cleaner, ds)
    cleaner.clean(ds)
    after = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
    before = np.frombuffer(bytes(raw), dtype="<u2").reshape(ds.Rows, ds.Columns)
    mask = box_mask(ds.Rows, ds.Columns, boxes)
    assert np.array_equal(after[~mask], before[~mask])
    assert after[0, 0] == before[0, 0] and after[0, 0] & 0xF000


def test_icon_image_and_overlays_are_removed_after_masking(tmp_path: Path) -> None:
    ds = example("examples_overlay.dcm")
    ds.IconImageSequence = [Dataset()]
    assert any(tag.group == 0x6000 for tag in ds.keys())  # noqa: SIM118
    make_cleaner(tmp_path).clean(ds)
    assert "IconImageSequence" not in ds
    assert not any(0x6000 <= tag.group <= 0x601E for tag in ds.keys())  # noqa: SIM118


# -- synthetic layouts: every photometric, bit depth, sign, planar configuration, frames ---------


def synthetic(
    photometric: str,
    bits: int,
    signed: bool,
    frames: int,
    planar: int,
    rows: int = 40,
    columns: int = 48,
) -> tuple[Dataset, np.ndarray]:
    samples = 3 if photometric in ("RGB", "YBR_FULL") else 1
    rng = np.random.default_rng(bits * 7 + frames + planar)
    allocated = 8 if bits <= 8 else 16
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    array = rng.integers(low, high, size=(frames, rows, columns, samples), endpoint=True).astype(dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Modality = "OT"
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if samples > 1:
        ds.PlanarConfiguration = planar
    stored = array.transpose(0, 3, 1, 2) if samples > 1 and planar == 1 else array
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW" if allocated > 8 else "OB"
    return ds, array.astype(np.int64)


def compress(ds: Dataset, array: np.ndarray, syntax: UID, planar: int) -> None:
    """Encode with pydicom from the pixel-interleaved array, then label the planar
    configuration: RLE and JPEG-LS code each colour separately whatever the label says, while
    JPEG 2000 requires 0 (PS3.5 8.2.4), so planar 1 is only exercised where it exists."""
    samples = array.shape[-1]
    if samples > 1:
        ds.PlanarConfiguration = 0
    shaped = array.reshape(array.shape[1:]) if array.shape[0] == 1 else array
    shaped = shaped[..., 0] if samples == 1 else shaped
    dtype = f"{'i' if ds.PixelRepresentation else 'u'}{ds.BitsAllocated // 8}"
    ds.compress(syntax, shaped.astype(dtype), generate_instance_uid=False)
    if samples > 1 and syntax in (RLELossless, JPEGLSLossless):
        ds.PlanarConfiguration = planar


LAYOUTS = [
    (photometric, bits, signed, frames, planar)
    for photometric, signed in (
        ("MONOCHROME2", False),
        ("MONOCHROME2", True),
        ("MONOCHROME1", False),
        ("RGB", False),
        ("YBR_FULL", False),
    )
    # YBR_FULL is 8-bit in practice and pydicom's RLE/JPEG-LS encoders accept only that
    for bits in {"RGB": (8, 16), "YBR_FULL": (8,)}.get(photometric, (8, 12, 16))
    for frames in (1, 3)
    for planar in ((0, 1) if photometric in ("RGB", "YBR_FULL") else (0,))
]


@pytest.mark.parametrize("syntax", [ELE, RLELossless, JPEGLSLossless, JPEG2000Lossless])
@pytest.mark.parametrize(("photometric", "bits", "signed", "frames", "planar"), LAYOUTS)
def test_every_layout_in_every_lossless_syntax(
    tmp_path: Path, syntax: UID, photometric: str, bits: int, signed: bool, frames: int, planar: int
) -> None:
    ds, original = synthetic(photometric, bits, signed, frames, planar)
    if syntax != ELE:
        compress(ds, original, syntax, planar)
    before = decoded(ds)
    assert np.array_equal(before, original)
    cleaner = make_cleaner(tmp_path)
    boxes = boxes_of(cleaner, ds)
    assert cleaner.clean(ds).cleaned
    out = round_trip(ds)
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.SOPInstanceUID == "1.2.3.4"
    assert out.BurnedInAnnotation == "NO"
    fill = default_fill(
        "RGB" if out.PhotometricInterpretation == "YBR_RCT" else photometric,
        out.SamplesPerPixel,
        bits,
        signed,
    )
    assert_masked(before, decoded(out), box_mask(out.Rows, out.Columns, boxes), fill)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.sampled_from(LAYOUTS),
    x=st.integers(0, 40),
    y=st.integers(0, 30),
    width=st.integers(1, 40),
    height=st.integers(1, 30),
)
def test_property_only_the_rectangle_changes(
    tmp_path: Path, layout: tuple[str, int, bool, int, int], x: int, y: int, width: int, height: int
) -> None:
    photometric, bits, signed, frames, planar = layout
    ds, before = synthetic(photometric, bits, signed, frames, planar)
    rules = f"""
[[rules]]
name = "r"
match.Modality = "OT"
rectangles = [{{ x = {x}, y = {y}, width = {width}, height = {height} }}]
"""
    cleaner = make_cleaner(tmp_path, rules, detect="off")  # rules alone: the fail-closed path
    _, boxes = cleaner.plan(ds)
    if not boxes:  # rectangle outside the image: the rule does not apply, fail closed
        with pytest.raises(Refused):
            cleaner.clean(ds)
        return
    cleaner.clean(ds)
    fill = default_fill(photometric, ds.SamplesPerPixel, bits, signed)
    assert_masked(before, decoded(ds), box_mask(ds.Rows, ds.Columns, boxes), fill)


def test_explicit_fill_value(tmp_path: Path) -> None:
    rules = """
[[rules]]
name = "grey"
match.Modality = "OT"
fill = [100, 110, 120]
rectangles = [{ x = 0, y = 0, width = 5, height = 5 }]
"""
    ds, before = synthetic("RGB", 8, False, 2, 1)
    make_cleaner(tmp_path, rules, detect="off").clean(ds)
    after = decoded(ds)
    assert (after[:, :5, :5, :] == np.array([100, 110, 120])).all()
    assert np.array_equal(after[:, 5:, :, :], before[:, 5:, :, :])


def test_fill_outside_bits_stored_is_refused(tmp_path: Path) -> None:
    rules = """
[[rules]]
name = "bad fill"
match.Modality = "OT"
fill = 300
rectangles = [{ x = 0, y = 0, width = 5, height = 5 }]
"""
    ds, _ = synthetic("MONOCHROME2", 8, False, 1, 0)
    with pytest.raises(Refused) as info:
        make_cleaner(tmp_path, rules).clean(ds)
    assert info.value.status == StoreStatus.PIXELS_NOT_CLEANABLE


def values(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


# -- lossy originals ----------------------------------------------------------------------------


def test_lossy_jpeg_ls_is_recompressed_only_when_allowed(tmp_path: Path) -> None:
    cleaner = make_cleaner(tmp_path, allow_lossy_recompression=True)
    ds = example("SC_rgb_jls_lossy_line.dcm")
    before = decoded(ds)
    boxes = boxes_of(cleaner, ds)
    cleaner.clean(ds)
    out = round_trip(ds)
    assert out.file_meta.TransferSyntaxUID == JPEGLSNearLossless
    assert out.LossyImageCompression == "01"
    assert values(out.LossyImageCompressionMethod)[-1] == "ISO_14495_1"
    after = decoded(out)
    mask = box_mask(out.Rows, out.Columns, boxes)
    near = 3  # NEAR of this example stream
    assert np.abs(after[:, ~mask, :] - before[:, ~mask, :]).max() <= near
    assert np.abs(after[:, mask, :]).max() <= near


def test_lossy_jpeg_2000_is_recompressed_only_when_allowed(tmp_path: Path) -> None:
    ds = example("693_J2KI.dcm")
    make_cleaner(tmp_path, allow_lossy_recompression=True).clean(ds)
    out = round_trip(ds)
    assert out.file_meta.TransferSyntaxUID == JPEG2000
    assert values(out.LossyImageCompressionMethod)[-1] == "ISO_15444_1"
    assert out.LossyImageCompression == "01"


# -- fail closed --------------------------------------------------------------------------------


def mr_with_phi() -> Dataset:
    ds = example("MR_small.dcm")
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "MRN12345"
    return ds


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "Burned In Annotation"),
        ({"Modality": "US"}, "Modality"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "SOP Class"),
    ],
)
def test_high_risk_object_without_rule_is_refused(tmp_path: Path, change: dict[str, str], reason: str) -> None:
    ds = mr_with_phi()
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    pixel_data = ds.PixelData
    with pytest.raises(Refused) as info:
        PixelCleaner(PixelConfig(detect="off")).clean(ds)
    assert info.value.status == StoreStatus.PIXELS_NOT_CLEANABLE
    assert reason in info.value.reason
    for value in ("DOE", "MRN12345", str(ds.SOPInstanceUID), str(ds.SOPClassUID), "US"):
        assert value not in info.value.reason
    assert ds.PixelData == pixel_data


def test_burned_in_object_whose_rule_does_not_match_is_refused(tmp_path: Path) -> None:
    rules = """
[[rules]]
name = "other scanner"
match.Manufacturer = { prefix = "Acme" }
rectangles = [{ x = 0, y = 0, width = 5, height = 5 }]
"""
    ds = mr_with_phi()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(Refused) as info:
        make_cleaner(tmp_path, rules, detect="off").clean(ds)
    assert info.value.status == StoreStatus.PIXELS_NOT_CLEANABLE


def test_rule_for_another_geometry_does_not_apply(tmp_path: Path) -> None:
    rules = """
[[rules]]
name = "big screens"
match.Modality = "US"
rectangles = [{ x = 600, y = 0, width = 100, height = 40 }]
"""
    ds = example("examples_rgb_color.dcm")  # 320 columns
    with pytest.raises(Refused):
        make_cleaner(tmp_path, rules, detect="off").clean(ds)


def test_remove_pixels_when_the_site_asks(tmp_path: Path) -> None:
    ds = example("examples_ybr_color.dcm")  # US, no rule
    ds.IconImageSequence = [Dataset()]
    outcome = PixelCleaner(PixelConfig(on_uncleaned="remove_pixels", detect="off")).clean(ds)
    assert outcome == PixelOutcome(pixels_removed=True)
    assert "PixelData" not in ds and "IconImageSequence" not in ds


def test_undecodable_object_that_needs_masking_is_refused(tmp_path: Path) -> None:
    ds = example("MR_small_jpeg_ls_lossless.dcm")
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00junk"
    with pytest.raises(Refused) as info:
        make_cleaner(tmp_path).clean(ds)
    assert info.value.status == StoreStatus.PIXELS_NOT_CLEANABLE
    assert "decode" in info.value.reason


def test_syntax_without_decoder_is_refused_when_a_rule_applies(tmp_path: Path) -> None:
    ds = example("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(Refused) as info:
        make_cleaner(tmp_path).clean(ds)
    assert info.value.status == StoreStatus.PIXELS_NOT_CLEANABLE


def test_no_rule_and_no_risk_leaves_pixel_data_undecoded(tmp_path: Path) -> None:
    """Garbage JPEG-LS Pixel Data passes through: proof that nothing was decoded."""
    rules = """
[[rules]]
name = "us only"
match.Modality = "US"
rectangles = [{ x = 0, y = 0, width = 5, height = 5 }]
"""
    ds = example("MR_small_jpeg_ls_lossless.dcm")
    garbage = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00junk"
    ds.PixelData = garbage
    assert make_cleaner(tmp_path, rules, detect="off").clean(ds) == PixelOutcome()
    assert ds.PixelData == garbage
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless


def test_high_risk_object_without_pixel_content_passes(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ELE
    ds.Modality = "US"
    assert PixelCleaner(PixelConfig()).clean(ds) == PixelOutcome()


def test_bad_rules_file_is_a_config_error_naming_file_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[rules]]\nname = "x"\nmatch.Colour = "red"\nrectangles = []\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        PixelCleaner(PixelConfig(rules_file=path))
    assert any(str(path) in p and "rules[0].match.Colour" in p for p in info.value.problems)
    assert any("rules[0].rectangles" in p for p in info.value.problems)


@pytest.mark.parametrize(
    "name", ["SC_rgb_rle_2frame.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_concurrent_cleaning_gives_the_same_result(tmp_path: Path, name: str) -> None:
    cleaner = make_cleaner(tmp_path)
    source = example(name)
    expected = copy.deepcopy(source)
    cleaner.clean(expected)
    copies = [copy.deepcopy(source) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(cleaner.clean, copies))
    assert all(c.PixelData == expected.PixelData for c in copies)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jpeg_ls_lossless.dcm",
        "examples_jpeg2k.dcm",
        "image_dfl.dcm",
        "MR_small_bigendian.dcm",
        "SC_rgb_rle.dcm",
        "examples_ybr_color.dcm",
    ],
)
def test_received_data_set_path(tmp_path: Path, name: str) -> None:
    """As the engine sees a C-STORE: data set bytes in the negotiated syntax, no File Meta
    (part10.decode_received), then clean, then the Part 10 encoder."""
    ds = example(name)
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    before = decoded(ds)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    if syntax.is_deflated:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    received = part10.decode_received(data, syntax)
    cleaner = make_cleaner(tmp_path)
    boxes = boxes_of(cleaner, received)
    assert cleaner.clean(received).cleaned
    out = round_trip(received)
    assert out.file_meta.TransferSyntaxUID == EXAMPLES[name]
    before = as_stored_after(before, syntax, str(ds.PhotometricInterpretation), out)
    assert_masked(before, decoded(out), box_mask(out.Rows, out.Columns, boxes), expected_fill(out))


def test_jpeg_baseline_stays_uncompressed_even_when_lossy_recompression_is_allowed(
    tmp_path: Path,
) -> None:
    """pydicom has no JPEG encoder: the switch cannot lead to a second JPEG step."""
    ds = example("SC_rgb_jpeg_dcmtk.dcm")
    make_cleaner(tmp_path, allow_lossy_recompression=True).clean(ds)
    assert round_trip(ds).file_meta.TransferSyntaxUID == ELE


def test_embedded_overlay_bits_are_cleared_everywhere(tmp_path: Path) -> None:
    """Retired embedded overlays (PS3.5 8.1.2) live in the unused high bits: they may show
    text anywhere, so with an overlay group lacking Overlay Data those bits are cleared."""
    ds = example("examples_overlay.dcm")
    del ds[0x60003000]  # the overlay now describes bits embedded in Pixel Data
    ds.add_new(0x60000102, "US", 15)  # Overlay Bit Position (retired)
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    values = raw & 0x0FFF
    raw |= 0x8000  # an "overlay" bit set in every pixel
    ds.PixelData = raw.tobytes()
    cleaner = make_cleaner(tmp_path)
    boxes = boxes_of(cleaner, ds)
    cleaner.clean(ds)
    after = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
    mask = box_mask(ds.Rows, ds.Columns, boxes)
    assert not (after & 0xF000).any()
    assert np.array_equal(after[~mask], values.reshape(ds.Rows, ds.Columns)[~mask])
