"""Side channels next to the pixels (issue 9 class 6; pixels/sidechannels.py).

Each hostile object plants `NAME^ MRN DOB` (or a bitmap) where a viewer does not show it: JPEG
and JPEG-LS COM/APPn segments, JPEG 2000 COM markers, JP2 boxes, bytes after the end of a
codestream, the unused high bits of native Pixel Data. Each test fails if the planted text
survives anywhere in the output bytes, or if the image no longer decodes to the same pixels.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from dicom_proxy import part10
from dicom_proxy.deidentify.pixels import PixelCleaner
from dicom_proxy.deidentify.pixels.sidechannels import strip_side_channels
from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus
from tests.dicomfactory import ct_dataset, engine, header_config

warnings.filterwarnings("ignore", module="pydicom")

NAME, MRN, DOB = "HOLLOWAY^WINIFRED", "MRN4417823", "19570402"
PLANTED = f"{NAME} {MRN} {DOB}".encode("ascii")
NEEDLES = (b"holloway", b"winifred", MRN.lower().encode(), DOB.encode())


# --- building hostile objects --------------------------------------------------------------


def example(name: str) -> Dataset:
    ds = dcmread(get_testdata_file(name))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, MRN, DOB
    for keyword, number in (("StudyInstanceUID", 1), ("SeriesInstanceUID", 2), ("SOPInstanceUID", 3)):
        if keyword not in ds:
            setattr(ds, keyword, f"1.2.826.0.1.3680043.9.7777.9.{number}")
    return ds


def frames_of(ds: Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames") or 1)
    return [bytes(f) for f in generate_frames(bytes(ds.PixelData), number_of_frames=count)]


def items(fragments: list[bytes], offsets: list[int] | None) -> bytes:
    table = struct.pack(f"<{len(offsets)}I", *offsets) if offsets else b""
    out = struct.pack("<HHI", 0xFFFE, 0xE000, len(table)) + table
    for fragment in fragments:
        fragment += b"\x00" * (len(fragment) % 2)
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
    return out


def encapsulated(ds: Dataset, frames: list[bytes], bot: bool = True, split: int | None = None) -> Dataset:
    """Frames as fragments (one per frame, or frame 0 split at byte `split`), with a BOT."""
    fragments = [frames[0][:split], frames[0][split:]] if split is not None else list(frames)
    offsets = [0]
    for fragment in fragments[:-1] if split is None else []:
        offsets.append(offsets[-1] + 8 + len(fragment) + len(fragment) % 2)
    ds.PixelData = items(fragments, offsets if bot else None)
    ds["PixelData"].is_undefined_length = True
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    return ds


def segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def after_soi(frame: bytes, *segments: bytes) -> bytes:
    return frame[:2] + b"".join(segments) + frame[2:]


def before_eoi(frame: bytes, *segments: bytes) -> bytes:
    eoi = frame.rfind(b"\xff\xd9")
    return frame[:eoi] + b"".join(segments) + frame[eoi:]


def j2k_main_header_end(frame: bytes) -> int:
    pos = 2
    while frame[pos + 1] != 0x90:
        pos += 2 + struct.unpack_from(">H", frame, pos + 2)[0]
    return pos


def j2k_com(text: bytes) -> bytes:
    return segment(0x64, b"\x00\x01" + text)  # Rcom 1: Latin text (ISO 15444-1 A.9.2)


def j2k_tile_part_com(frame: bytes, text: bytes, tlm: bool = False) -> bytes:
    """COM in the first tile-part header, Psot grown to count it; optionally a TLM listing
    every tile-part's length (Stlm 0x40: no Ttlm, 32-bit Ptlm)."""
    sot = j2k_main_header_end(frame)
    com = j2k_com(text)
    lengths = []
    pos = sot
    while frame[pos : pos + 2] == b"\xff\x90":
        psot = struct.unpack_from(">I", frame, pos + 6)[0]
        lengths.append(psot)
        pos += psot
    psot = lengths[0] + len(com)
    edited = frame[: sot + 6] + struct.pack(">I", psot) + frame[sot + 10 : sot + 12] + com + frame[sot + 12 :]
    if not tlm:
        return edited
    lengths[0] = psot
    table = segment(0x55, b"\x00\x40" + b"".join(struct.pack(">I", n) for n in lengths))
    return edited[:sot] + table + edited[sot:]


def box(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", 8 + len(content)) + kind + content


def jp2(codestream: bytes, ds: Dataset, *extra: bytes) -> bytes:
    """A JP2 file (ISO 15444-1 Annex I) around a codestream, with `extra` boxes before it."""
    ssiz = codestream[4 + 38 + 2]  # first component's Ssiz in SIZ (A.5.1)
    ihdr = struct.pack(">IIHBBBB", int(ds.Rows), int(ds.Columns), 1, ssiz, 7, 0, 0)
    colr = struct.pack(">BBBI", 1, 0, 0, 17)  # enumerated: greyscale
    icc = struct.pack(">BBB", 2, 0, 0) + b"\x00" * 8 + b"desc" + PLANTED  # an "ICC profile"
    header = box(b"jp2h", box(b"ihdr", ihdr) + box(b"colr", colr) + box(b"colr", icc))
    return (
        box(b"jP  ", b"\r\n\x87\n")
        + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
        + header
        + b"".join(extra)
        + box(b"jp2c", codestream)
    )


def native_with_text_in_high_bits(signed: bool = False) -> Dataset:
    """16-bit samples, Bits Stored 12, whose stored bytes spell the planted text."""
    ds = ct_dataset(8, 8)
    text = (PLANTED * 8)[: 8 * 8 * 2]
    ds.PixelData = text
    ds.PixelRepresentation = 1 if signed else 0
    return ds


def native_with_embedded_overlay() -> Dataset:
    """Retired embedded overlay (PS3.5 8.1.2): group 6000 without Overlay Data, bitmap in bit
    12 of each sample (PS3.3 C.9.2.1.1, Overlay Bit Position)."""
    ds = ct_dataset(16, 16)
    rng = np.random.default_rng(3)
    values = rng.integers(0, 4096, size=(16, 16), dtype=np.uint16)
    bitmap = np.zeros((16, 16), dtype=np.uint16)
    bitmap[4:12, 2:14] = 1  # a block where text would be drawn
    ds.PixelData = (values | bitmap << 12).astype("<u2").tobytes()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", 12)
    return ds


def native_with_trailing_text() -> Dataset:
    ds = ct_dataset(4, 4)
    ds.PixelData = bytes(32) + PLANTED + b"\x00" * (len(PLANTED) % 2)
    return ds


def jpeg(name: str, edit: Callable[[bytes], bytes], **layout: object) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = example(name)
        return encapsulated(ds, [edit(f) for f in frames_of(ds)], **layout)  # type: ignore[arg-type]

    return build


def multi_frame(name: str, edit: Callable[[bytes], bytes], count: int, extended: bool) -> Callable[[], Dataset]:
    """`count` copies of the example's frame; Extended Offset Table (PS3.3 C.7.6.3.1.8) or BOT."""

    def build() -> Dataset:
        ds = example(name)
        frame = edit(frames_of(ds)[0])
        ds = encapsulated(ds, [frame] * count, bot=not extended)
        if extended:
            size = len(frame) + len(frame) % 2
            ds.ExtendedOffsetTable = struct.pack(f"<{count}Q", *(i * (size + 8) for i in range(count)))
            ds.ExtendedOffsetTableLengths = struct.pack(f"<{count}Q", *[size] * count)
        return ds

    return build


def split_in_comment(name: str) -> Callable[[], Dataset]:
    """One frame in two fragments, the boundary inside the planted COM (no BOT)."""

    def build() -> Dataset:
        ds = example(name)
        frame = after_soi(frames_of(ds)[0], segment(0xFE, PLANTED))
        return encapsulated(ds, [frame], bot=False, split=2 + 4 + 8)

    return build


def jp2_build(name: str, *extra: bytes) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = example(name)
        return encapsulated(ds, [jp2(frames_of(ds)[0], ds, *extra)])

    return build


COM = segment(0xFE, PLANTED)
EXIF = segment(0xE1, b"Exif\x00\x00" + PLANTED)
ICC = segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + PLANTED)
JFIF_THUMB = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x01\x0b" + PLANTED[:33])  # 1x11 RGB
SPIFF = segment(0xE8, b"SPIFF\x00" + PLANTED)

HOSTILE: dict[str, Callable[[], Dataset]] = {
    "jpeg_baseline_com": jpeg("SC_rgb_jpeg_dcmtk.dcm", lambda f: after_soi(f, COM)),
    "jpeg_baseline_exif_app1": jpeg("SC_rgb_dcmtk_+eb+cy+s2.dcm", lambda f: after_soi(f, EXIF)),
    "jpeg_baseline_jfif_thumbnail": jpeg("SC_rgb_dcmtk_+eb+cr.dcm", lambda f: after_soi(f, JFIF_THUMB)),
    "jpeg_baseline_adobe_app14_tail": jpeg(
        "SC_rgb_jpeg_app14_dcmd.dcm",
        lambda f: f[:2] + segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00" + PLANTED) + f[2:],
    ),
    "jpeg_baseline_com_after_scan": jpeg("SC_rgb_jpeg_dcmtk.dcm", lambda f: before_eoi(f, COM)),
    "jpeg_baseline_text_after_eoi": jpeg("SC_rgb_jpeg_dcmtk.dcm", lambda f: f + PLANTED),
    "jpeg_baseline_text_before_soi": jpeg("SC_rgb_jpeg_dcmtk.dcm", lambda f: PLANTED + f),
    "jpeg_lossless_sv1_com": jpeg("SC_rgb_jpeg_gdcm.dcm", lambda f: after_soi(f, COM)),
    "jpeg_extended_12bit_icc_com": jpeg("JPGExtended.dcm", lambda f: after_soi(f, ICC, COM)),
    "jpeg_multiframe_extended_offsets": multi_frame("SC_rgb_jpeg_dcmtk.dcm", lambda f: after_soi(f, COM), 3, True),
    "jpeg_multiframe_basic_offsets": multi_frame("SC_rgb_jpeg_dcmtk.dcm", lambda f: before_eoi(f, COM), 3, False),
    "jpeg_two_fragments_no_offsets": split_in_comment("SC_rgb_jpeg_dcmtk.dcm"),
    "jpeg_ls_lossless_com": jpeg("MR_small_jpeg_ls_lossless.dcm", lambda f: after_soi(f, COM)),
    "jpeg_ls_near_lossless_spiff_com": jpeg("SC_rgb_jls_lossy_line.dcm", lambda f: after_soi(f, SPIFF, COM)),
    "j2k_main_header_com": jpeg(
        "MR_small_jp2klossless.dcm",
        lambda f: f[: j2k_main_header_end(f)] + j2k_com(PLANTED) + f[j2k_main_header_end(f) :],
    ),
    "j2k_tile_part_com": jpeg("MR_small_jp2klossless.dcm", lambda f: j2k_tile_part_com(f, PLANTED)),
    "j2k_tile_part_com_with_tlm": jpeg("MR_small_jp2klossless.dcm", lambda f: j2k_tile_part_com(f, PLANTED, tlm=True)),
    "j2k_text_after_eoc": jpeg("MR_small_jp2klossless.dcm", lambda f: f + PLANTED),
    "jp2_xml_uuid_icc_boxes": jp2_build(
        "MR_small_jp2klossless.dcm",
        box(b"xml ", b"<patient>" + PLANTED + b"</patient>"),
        box(b"uuid", bytes(16) + PLANTED),
    ),
    "native_text_in_high_bits": native_with_text_in_high_bits,
    "native_signed_text_in_high_bits": lambda: native_with_text_in_high_bits(signed=True),
    "native_trailing_text": native_with_trailing_text,
}


# --- the checks ------------------------------------------------------------------------------


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def decoded(data: bytes) -> np.ndarray:
    return dcmread(BytesIO(data)).pixel_array


def leaks(output: bytes) -> list[bytes]:
    lowered = output.lower()
    return [needle for needle in NEEDLES if needle in lowered]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_planted_text_does_not_survive_and_pixels_are_unchanged(name: str, tmp_path: Path) -> None:
    path = write(HOSTILE[name](), tmp_path / "in.dcm")
    original = path.read_bytes()
    assert leaks(original), "the hostile object must carry the planted text"
    result = engine().deidentify_file(path)
    output = b"".join(bytes(part) for part in result.parts)
    assert leaks(output) == []
    reference = REFERENCE[name]() if name in REFERENCE else decoded(original)
    after = decoded(output)
    # Pixels change only where the text detector masks (it may take anatomy for text here).
    stripped = part10.read_file(path)
    strip_side_channels(stripped)
    unmasked = np.ones(after.shape[:2], dtype=bool)
    for found in PixelCleaner(header_config().pixels).preview(stripped).boxes:
        unmasked[found.box.top : found.box.bottom, found.box.left : found.box.right] = False
    assert unmasked.mean() > 0.7
    assert np.array_equal(reference[unmasked], after[unmasked])


# Hostile objects that do not decode as intended themselves: what their image is.
REFERENCE: dict[str, Callable[[], np.ndarray]] = {
    "jpeg_baseline_text_before_soi": lambda: dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).pixel_array,
    "native_trailing_text": lambda: np.zeros((4, 4), dtype=np.uint16),
}


def test_codestream_metadata_is_what_was_planted_and_nothing_else(tmp_path: Path) -> None:
    """Only the planted segments go: the rest of the stream is byte-identical."""
    ds = example("SC_rgb_jpeg_dcmtk.dcm")
    pristine = frames_of(ds)[0]
    hostile = encapsulated(ds, [after_soi(pristine, COM, EXIF)])
    data = part10.read_file(write(hostile, tmp_path / "in.dcm"))
    outcome = strip_side_channels(data)
    assert outcome.segments_removed == 2
    assert frames_of(data)[0].rstrip(b"\x00") == pristine.rstrip(b"\x00")


def test_jfif_and_adobe_markers_are_kept_for_decoding(tmp_path: Path) -> None:
    """APP0 JFIF and APP14 Adobe select the colour transform: kept (without extras)."""
    ds = example("SC_rgb_jpeg_app14_dcmd.dcm")
    frame = frames_of(ds)[0]
    assert b"Adobe" in frame
    data = part10.read_file(write(encapsulated(ds, [after_soi(frame, JFIF_THUMB)]), tmp_path / "in.dcm"))
    strip_side_channels(data)
    out = frames_of(data)[0]
    assert b"Adobe" in out
    assert segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00") in out


def test_tile_part_lengths_are_fixed(tmp_path: Path) -> None:
    ds = example("MR_small_jp2klossless.dcm")
    pristine = frames_of(ds)[0]
    hostile = encapsulated(ds, [j2k_tile_part_com(pristine, PLANTED, tlm=True)])
    data = part10.read_file(write(hostile, tmp_path / "in.dcm"))
    strip_side_channels(data)
    out = frames_of(data)[0]
    sot = j2k_main_header_end(out)
    psot = struct.unpack_from(">I", out, sot + 6)[0]
    assert out[sot + psot : sot + psot + 2] == b"\xff\xd9"
    tlm = out.find(b"\xff\x55")
    assert struct.unpack_from(">I", out, tlm + 6)[0] == psot
    assert PLANTED not in out


def test_offset_tables_point_at_the_new_fragments(tmp_path: Path) -> None:
    build = multi_frame("SC_rgb_jpeg_dcmtk.dcm", lambda f: after_soi(f, COM), 3, True)
    data = part10.read_file(write(build(), tmp_path / "in.dcm"))
    strip_side_channels(data)
    value = bytes(data.PixelData)
    offsets = struct.unpack("<3Q", data.ExtendedOffsetTable)
    lengths = struct.unpack("<3Q", data.ExtendedOffsetTableLengths)
    first = 8 + struct.unpack_from("<I", value, 4)[0]  # after the (empty) Basic Offset Table
    for offset, length in zip(offsets, lengths, strict=True):
        tag, item_length = struct.unpack_from("<II", value, first + offset)
        assert (tag, item_length) == (0xE000FFFE, length)
        assert value[first + offset + 8 : first + offset + 10] == b"\xff\xd8"


def test_embedded_overlay_bitmap_is_cleared_on_every_object(tmp_path: Path) -> None:
    """No pixel rule applies: the overlay in bit 12 is cleared anyway; pixel values stay."""
    path = write(native_with_embedded_overlay(), tmp_path / "in.dcm")
    before = decoded(path.read_bytes())
    output = b"".join(bytes(p) for p in engine().deidentify_file(path).parts)
    result = dcmread(BytesIO(output))
    stored = np.frombuffer(result.PixelData, dtype="<u2")
    assert not np.any(stored >> 12)
    assert np.array_equal(result.pixel_array, before)
    assert not [tag for tag in result.keys() if tag.group == 0x6000]  # noqa: SIM118


def test_signed_values_are_sign_extended(tmp_path: Path) -> None:
    ds = ct_dataset(1, 4)
    ds.PixelRepresentation = 1
    ds.PixelData = np.array([0xF123, 0x1FFF, 0x0005, 0x8800], dtype="<u2").tobytes()
    data = part10.read_file(write(ds, tmp_path / "in.dcm"))
    assert strip_side_channels(data).unused_bits_cleared
    assert list(np.frombuffer(bytes(data.PixelData), dtype="<i2")) == [0x123, -1, 5, -2048]


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm", "CT_small.dcm"])
def test_clean_pixel_data_is_not_copied(name: str) -> None:
    """Nothing to strip: Pixel Data stays the very view of the received bytes."""
    data = part10.read_file(Path(get_testdata_file(name)))
    before = data.get_item(0x7FE00010)
    assert isinstance(before.value, memoryview)
    assert not strip_side_channels(data).changed
    assert data.get_item(0x7FE00010) is before


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: after_soi(f, segment(0xF3, PLANTED)),  # JPG3: reserved, unknown
        lambda f: f[: f.rfind(b"\xff\xd9")],  # no EOI
        lambda f: after_soi(f, b"\xff\xfe\xff\xff"),  # segment longer than the stream
    ],
    ids=["unknown_marker", "truncated", "bad_length"],
)
def test_streams_that_do_not_parse_are_refused(edit: Callable[[bytes], bytes], tmp_path: Path) -> None:
    path = write(jpeg("SC_rgb_jpeg_dcmtk.dcm", edit)(), tmp_path / "in.dcm")
    with pytest.raises(Refused) as caught:
        engine().deidentify_file(path)
    assert caught.value.status == StoreStatus.PIXELS_NOT_CLEANABLE
    assert "holloway" not in str(caught.value).lower()


def test_native_without_unused_bits_is_untouched() -> None:
    ds = ct_dataset(2, 2)
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = PLANTED[:8]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert not strip_side_channels(ds).changed
