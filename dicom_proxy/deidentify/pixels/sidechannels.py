"""Side channels next to the pixels (issue 9 class 6): stripped on every object, no re-encoding.

Pixel Data can carry identifying text that no viewer shows as part of the image:

- Encapsulated Pixel Data (PS3.5 8.2, Annex A.4) holds whole codestreams, and those have their
  own metadata: JPEG and JPEG-LS comment (COM) and application (APPn) marker segments (ITU T.81
  B.2.4.5-6, ITU T.87 / ISO 14495-1 C.2), JPEG 2000 comment markers (ISO 15444-1 A.9.2) and,
  in non-conformant objects, a JP2 file wrapper whose boxes (xml, uuid, IPR...) hold anything
  (ISO 15444-1 Annex I; PS3.5 A.4.4 says the JP2 header shall not be included). Bytes before a
  codestream's start or after its end marker are ignored by decoders and can hold text too.
  These are removed by a bitstream edit: marker segments and boxes are cut out, lengths that
  count them are fixed (JPEG 2000 Psot and TLM, JP2 box lengths), and the fragments and offset
  tables (Basic Offset Table, Extended Offset Table, PS3.5 A.4, PS3.3 C.7.6.3.1.8) rewritten.
  What decoding needs is kept:
  * APP0 "JFIF" (version, density): libjpeg takes its presence to mean YCbCr; its thumbnail
    (an image of its own, so it can show text) is dropped;
  * APP14 "Adobe": its transform flag selects the colour transform (T.872 6.5.3); the segment
    is cut to its fixed 12 bytes;
  * APP8 "mrfx" in JPEG-LS: CharLS reads the HP colour transform from it (5 bytes);
  * every marker of the decoding process itself (frame, scan, tables, restart, LSE, SIZ, COD...).
  Every other APPn (Exif, XMP, ICC profile, Photoshop, SPIFF...) and every COM is removed; an
  unknown marker or a stream that does not parse is refused (fail closed).
- Native Pixel Data (PS3.5 8.1): bits of a stored value outside Bits Stored / High Bit carry
  no pixel value, but retired embedded overlays draw bitmaps there (PS3.5 8.1.2, PS3.3
  C.9.2.1.1). They are cleared (zeroed, or the sign extended for signed data) on every object,
  so the decoded pixel values do not change. Trailing bytes beyond the image (other than the
  one padding byte of PS3.5 7.1.1) are cut.

Overlay Data (60xx,3000) elements are attributes, handled by the policy in the tag stage.
Nothing is copied when nothing needs to change: the stream is scanned, and edited only when
something is found.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import Tag
from pydicom.uid import UID

from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus

__all__ = ["SideChannelOutcome", "strip_side_channels"]

PIXEL_DATA = Tag(0x7FE00010)
EXTENDED_OFFSET_TABLE = Tag(0x7FE00001)
EXTENDED_OFFSET_TABLE_LENGTHS = Tag(0x7FE00002)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32
_SEQUENCE_DELIMITER = 0xE0DDFFFE


@dataclass(frozen=True)
class SideChannelOutcome:
    """What was removed: marker segments/boxes/stray bytes, and whether unused bits were set."""

    segments_removed: int = 0
    stray_bytes_removed: int = 0
    unused_bits_cleared: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.segments_removed or self.stray_bytes_removed or self.unused_bits_cleared)


class StreamError(Exception):
    """A codestream does not parse; the message holds no values."""


def strip_side_channels(dataset: Dataset) -> SideChannelOutcome:
    """Strip metadata from encapsulated Pixel Data and clear unused bits of native Pixel Data.

    Raises Refused (PIXELS_NOT_CLEANABLE) when the Pixel Data cannot be parsed with certainty.
    """
    if PIXEL_DATA not in dataset:
        return SideChannelOutcome()
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    element = dataset.get_item(PIXEL_DATA)
    value = element.value
    if value is None or len(value) == 0:
        return SideChannelOutcome()
    try:
        if syntax.is_encapsulated:
            return _strip_encapsulated(dataset, element, syntax)
        return _clear_native(dataset, element, syntax)
    except StreamError as exc:
        raise Refused(f"Pixel Data side channels: {exc}", StoreStatus.PIXELS_NOT_CLEANABLE) from None


# --- native Pixel Data: bits outside Bits Stored ------------------------------------------


def _clear_native(dataset: Dataset, element: DataElement | RawDataElement, syntax: UID) -> SideChannelOutcome:
    value = memoryview(element.value)  # type: ignore[arg-type]
    try:
        allocated = int(dataset.BitsAllocated)
        stored = int(dataset.get("BitsStored") or allocated)
        high = int(dataset.get("HighBit") if dataset.get("HighBit") is not None else stored - 1)
        signed = int(dataset.get("PixelRepresentation") or 0) == 1
        expected = int(get_expected_length(dataset, "bytes"))
    except (AttributeError, TypeError, ValueError, KeyError):
        raise StreamError("Image Pixel Module attributes missing or invalid") from None
    keep = expected + expected % 2  # PS3.5 7.1.1: one padding byte to an even length
    stray = max(0, len(value) - keep)
    clear = allocated in (8, 16, 32, 64) and (stored < allocated or high != stored - 1)
    if clear and not 0 < stored <= high + 1 <= allocated:
        raise StreamError("Bits Stored / High Bit inconsistent with Bits Allocated")
    dtype = np.dtype(f"{'<' if syntax.is_little_endian else '>'}{'i' if signed else 'u'}{max(allocated, 8) // 8}")
    usable = min(len(value), expected) // dtype.itemsize * dtype.itemsize
    samples = np.frombuffer(value[:usable], dtype=dtype)
    cleaner = _bit_cleaner(allocated, stored, high, signed) if clear else None
    dirty = cleaner is not None and _needs_clearing(samples, cleaner, stored, high, signed)
    if not dirty and not stray:
        return SideChannelOutcome()
    data = bytearray(value[: len(value) - stray])
    if dirty and cleaner is not None:
        writable = np.frombuffer(data, dtype=dtype, count=usable // dtype.itemsize)
        writable[...] = cleaner(writable)
    _replace_pixel_data(dataset, element, bytes(data), undefined_length=False)
    return SideChannelOutcome(stray_bytes_removed=stray, unused_bits_cleared=dirty)


def _bit_cleaner(allocated: int, stored: int, high: int, signed: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Stored value -> the same pixel value with every unused bit cleared (PS3.5 8.1.1)."""
    low = high - stored + 1
    above = allocated - 1 - high

    def clean(samples: np.ndarray) -> np.ndarray:
        kind = samples.dtype.type
        if signed:
            extended: np.ndarray = (samples << kind(above)) >> kind(above)  # arithmetic: sign-extends
            if low:
                extended = np.bitwise_and(extended, ~kind((1 << low) - 1))
            return extended
        cleared: np.ndarray = np.bitwise_and(samples, kind(((1 << stored) - 1) << low))
        return cleared

    return clean


def _needs_clearing(
    samples: np.ndarray, cleaner: Callable[[np.ndarray], np.ndarray], stored: int, high: int, signed: bool
) -> bool:
    """Whether any sample has an unused bit set (or, signed, not sign-extended)."""
    if samples.size == 0:
        return False
    if high == stored - 1:
        # The usual layout: unused bits are exactly those above High Bit, so a range check
        # (two passes, no temporary arrays) decides.
        if signed:
            return int(samples.min()) < -(1 << (stored - 1)) or int(samples.max()) >= 1 << (stored - 1)
        return int(samples.max()) >= 1 << stored
    chunk = 1 << 20  # bounded temporary arrays for large multi-frame objects
    return any(
        bool(np.any(cleaner(samples[i : i + chunk]) != samples[i : i + chunk])) for i in range(0, len(samples), chunk)
    )


# --- encapsulated Pixel Data: fragments, frames, offset tables ----------------------------


@dataclass(frozen=True)
class _Edit:
    """Replace bytes [start, end) of a frame with `data` (b"" removes them)."""

    start: int
    end: int
    data: bytes = b""


@dataclass
class _Edits:
    splices: list[_Edit]
    segments: int = 0
    stray: int = 0

    def remove(self, start: int, end: int, stray: bool = False) -> None:
        if end > start:
            self.splices.append(_Edit(start, end))
            if stray:
                self.stray += end - start
            else:
                self.segments += 1

    def replace(self, start: int, end: int, data: bytes) -> None:
        self.splices.append(_Edit(start, end, data))


Scanner = Callable[[memoryview, _Edits], None]


def _strip_encapsulated(dataset: Dataset, element: DataElement | RawDataElement, syntax: UID) -> SideChannelOutcome:
    scanner = _SCANNERS.get(str(syntax))
    if scanner is None:
        # RLE, MPEG, HEVC, deflated image: no metadata segments parsed here (see the note).
        return SideChannelOutcome()
    value = memoryview(element.value)  # type: ignore[arg-type]
    offsets, fragments = _items(value)
    frame_count = int(dataset.get("NumberOfFrames") or 1)
    frames = _frames(fragments, offsets, frame_count, _extended_offsets(dataset))
    results: list[tuple[memoryview, _Edits]] = []
    for frame in frames:
        edits = _Edits([])
        scanner(frame, edits)
        results.append((frame, edits))
    if not any(edits.splices for _, edits in results):
        return SideChannelOutcome()
    new_frames = [_apply(frame, edits.splices) for frame, edits in results]
    _store_frames(dataset, element, new_frames, basic_offsets=bool(offsets))
    return SideChannelOutcome(
        segments_removed=sum(e.segments for _, e in results), stray_bytes_removed=sum(e.stray for _, e in results)
    )


def _items(value: memoryview) -> tuple[list[int], list[memoryview]]:
    """The Basic Offset Table and the fragments (PS3.5 A.4: items of explicit length)."""
    items: list[memoryview] = []
    pos = 0
    while pos + 8 <= len(value):
        tag, length = struct.unpack_from("<II", value, pos)
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM or length == _UNDEFINED or pos + 8 + length > len(value):
            raise StreamError("encapsulated Pixel Data items do not parse")
        items.append(value[pos + 8 : pos + 8 + length])
        pos += 8 + length
    if not items or len(items[0]) % 4:
        raise StreamError("encapsulated Pixel Data has no valid Basic Offset Table item")
    offsets = list(struct.unpack(f"<{len(items[0]) // 4}I", items[0]))
    return offsets, items[1:]


def _extended_offsets(dataset: Dataset) -> list[int]:
    if EXTENDED_OFFSET_TABLE not in dataset:
        return []
    raw = bytes(dataset[EXTENDED_OFFSET_TABLE].value or b"")
    if len(raw) % 8:
        raise StreamError("Extended Offset Table length is not a multiple of 8")
    return list(struct.unpack(f"<{len(raw) // 8}Q", raw))


def _frames(fragments: list[memoryview], basic: list[int], count: int, extended: list[int]) -> list[memoryview]:
    """Group fragments into frames (PS3.5 A.4): by an offset table, one per fragment, or all
    in one for a single frame. A frame of one fragment stays a view (no copy)."""
    if not fragments:
        raise StreamError("encapsulated Pixel Data has no fragments")
    starts: list[int] = []
    position = 0
    for fragment in fragments:
        starts.append(position)
        position += 8 + len(fragment)
    table = extended or basic
    if table:
        index = {start: i for i, start in enumerate(starts)}
        if table[0] != 0 or any(offset not in index for offset in table) or sorted(table) != table:
            raise StreamError("offset table does not point at fragments")
        bounds = [index[offset] for offset in table] + [len(fragments)]
        groups = [fragments[a:b] for a, b in itertools.pairwise(bounds)]
    elif count == 1:
        groups = [fragments]
    elif len(fragments) == count:
        groups = [[fragment] for fragment in fragments]
    else:
        raise StreamError("cannot tell the frames apart (no offset table, fragments != frames)")
    return [group[0] if len(group) == 1 else memoryview(b"".join(group)) for group in groups]


def _apply(frame: memoryview, splices: list[_Edit]) -> bytes:
    parts: list[bytes | memoryview] = []
    position = 0
    for edit in sorted(splices, key=lambda e: e.start):
        if edit.start < position:
            raise StreamError("overlapping edits")
        parts += [frame[position : edit.start], edit.data]
        position = edit.end
    parts.append(frame[position:])
    return b"".join(parts)


def _store_frames(
    dataset: Dataset, element: DataElement | RawDataElement, frames: list[bytes], basic_offsets: bool
) -> None:
    """One fragment per frame, each of even length; offset tables recomputed."""
    padded = [frame + b"\x00" * (len(frame) % 2) for frame in frames]
    offsets = [0]
    for frame in padded[:-1]:
        offsets.append(offsets[-1] + 8 + len(frame))
    table = struct.pack(f"<{len(offsets)}I", *offsets) if basic_offsets else b""
    if basic_offsets and offsets[-1] > 0xFFFFFFFF:
        raise StreamError("Basic Offset Table cannot hold the offsets")
    parts = [struct.pack("<II", _ITEM, len(table)), table]
    for frame in padded:
        parts += [struct.pack("<II", _ITEM, len(frame)), frame]
    if EXTENDED_OFFSET_TABLE in dataset:
        dataset[EXTENDED_OFFSET_TABLE].value = struct.pack(f"<{len(offsets)}Q", *offsets)
    if EXTENDED_OFFSET_TABLE_LENGTHS in dataset:
        dataset[EXTENDED_OFFSET_TABLE_LENGTHS].value = struct.pack(f"<{len(padded)}Q", *map(len, padded))
    _replace_pixel_data(dataset, element, b"".join(parts), undefined_length=True)


def _replace_pixel_data(
    dataset: Dataset, element: DataElement | RawDataElement, data: bytes, undefined_length: bool
) -> None:
    """Keep the codec's representation: a raw element over a view, written around the header."""
    vr = element.VR if element.VR in ("OB", "OW") else None
    if vr is None:
        vr = "OB" if undefined_length or int(dataset.get("BitsAllocated", 16)) <= 8 else "OW"
    little = UID(dataset.file_meta.TransferSyntaxUID).is_little_endian
    dataset[PIXEL_DATA] = RawDataElement(
        PIXEL_DATA,
        vr,
        _UNDEFINED if undefined_length else len(data),
        memoryview(data),  # type: ignore[arg-type]
        0,
        UID(dataset.file_meta.TransferSyntaxUID).is_implicit_VR,
        little,
    )


# --- JPEG and JPEG-LS (ITU T.81 Annex B, ITU T.87 / ISO 14495-1 Annex C) -------------------

_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_RST = range(0xD0, 0xD8)
# T.81 Table B.1: SOFn (not C4 DHT, C8 JPG, CC DAC), DHT, DAC, SOS, DQT, DNL, DRI, DHP, EXP.
_JPEG_DECODING = frozenset({*range(0xC0, 0xD0), _SOS, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}) - {0xC8}
# T.87 C.1: SOF55, LSE, SOS, DRI (DNL is not used by JPEG-LS but harmless).
_JPEG_LS_DECODING = frozenset({0xF7, 0xF8, _SOS, 0xDC, 0xDD})
_PADDING = re.compile(rb"[\x00\xff]*")


def _scan_jpeg(frame: memoryview, edits: _Edits) -> None:
    _scan_jpeg_family(frame, edits, _JPEG_DECODING, False, _keep_jpeg_app)


def _scan_jpeg_ls(frame: memoryview, edits: _Edits) -> None:
    _scan_jpeg_family(frame, edits, _JPEG_LS_DECODING, True, _keep_jpeg_ls_app)


AppPolicy = Callable[[int, memoryview], bytes | None]


def _marker_positions(frame: memoryview, ls: bool) -> np.ndarray:
    """Sorted offsets of every 0xFF that starts a marker, i.e. is followed by a byte that is
    not stuffing (T.81 B.1.1.5: 0x00; T.87 A.1: a byte with its high bit clear), a restart
    marker or fill. Entropy-coded data ends at the first one after a scan header: found with
    one vectorised pass instead of a byte-by-byte walk."""
    data = np.frombuffer(frame, dtype=np.uint8)
    if len(data) < 2:
        return np.zeros(0, dtype=np.intp)
    ff = np.flatnonzero(data[:-1] == 0xFF)
    following = data[ff + 1]
    marker = (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))
    marker &= following >= 0x80 if ls else following != 0x00
    positions: np.ndarray = ff[marker]
    return positions


def _scan_jpeg_family(frame: memoryview, edits: _Edits, decoding: frozenset[int], ls: bool, app: AppPolicy) -> None:
    markers: np.ndarray | None = None
    start = _find(frame, _JPEG_START)
    edits.remove(0, start, stray=True)
    pos = start + 2
    while True:
        if pos + 2 > len(frame) or frame[pos] != 0xFF:
            raise StreamError("JPEG marker expected")
        while pos + 2 < len(frame) and frame[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker (T.81 B.1.1.2)
        marker = frame[pos + 1]
        if marker == _EOI:
            _trailing(frame, pos + 2, edits)
            return
        if marker in _RST or marker == 0x01:  # stand-alone markers (T.81 B.1.1.3)
            pos += 2
            continue
        if pos + 4 > len(frame):
            raise StreamError("JPEG stream truncated")
        end = pos + 2 + struct.unpack_from(">H", frame, pos + 2)[0]
        if end > len(frame) or end < pos + 4:
            raise StreamError("JPEG marker segment length invalid")
        if marker == _COM:
            edits.remove(pos, end)
        elif 0xE0 <= marker <= 0xEF:
            kept = app(marker, frame[pos + 4 : end])
            if kept is None:
                edits.remove(pos, end)
            elif kept != frame[pos + 4 : end]:
                edits.replace(pos, end, bytes((0xFF, marker)) + struct.pack(">H", len(kept) + 2) + kept)
                edits.segments += 1
        elif marker not in decoding:
            raise StreamError("unknown JPEG marker")
        pos = end
        if marker == _SOS:
            if markers is None:
                markers = _marker_positions(frame, ls)
            index = int(np.searchsorted(markers, pos))
            if index == len(markers):
                raise StreamError("JPEG scan does not end")
            pos = int(markers[index])


def _keep_jpeg_app(marker: int, payload: memoryview) -> bytes | None:
    """JFIF APP0 without its thumbnail; Adobe APP14 cut to its fixed fields; nothing else."""
    if marker == 0xE0 and bytes(payload[:5]) == b"JFIF\x00" and len(payload) >= 14:
        return bytes(payload[:12]) + b"\x00\x00"  # version, units, densities; no thumbnail
    if marker == 0xEE and bytes(payload[:5]) == b"Adobe" and len(payload) >= 12:
        return bytes(payload[:12])  # version, flags0, flags1, transform
    return None


def _keep_jpeg_ls_app(marker: int, payload: memoryview) -> bytes | None:
    """CharLS reads the HP colour transform from APP8 "mrfx" + one byte."""
    if marker == 0xE8 and bytes(payload[:4]) == b"mrfx" and len(payload) >= 5:
        return bytes(payload[:5])
    return None


_JPEG_START = re.compile(rb"\xff\xd8")  # SOI (T.81 B.2.1)
_J2K_START = re.compile(rb"\xff\x4f\xff\x51")  # SOC then SIZ (15444-1 A.3)


def _find(frame: memoryview, signature: re.Pattern[bytes]) -> int:
    found = signature.search(frame)
    if found is None:
        raise StreamError("codestream start not found")
    return found.start()


def _trailing(frame: memoryview, end: int, edits: _Edits) -> None:
    """Bytes after the end of the codestream: padding (0x00/0xFF) stays, anything else goes."""
    padding = _PADDING.match(frame, end)
    if padding is None or padding.end() != len(frame):
        edits.remove(end, len(frame), stray=True)


# --- JPEG 2000 codestream (ISO 15444-1 Annex A) and JP2 file (Annex I) ---------------------

_J2K_SOC, _J2K_SOT, _J2K_SOD, _J2K_EOC, _J2K_COM, _J2K_TLM = 0x4F, 0x90, 0x93, 0xD9, 0x64, 0x55
# Marker segments of the main and tile-part headers that decoding uses (A.2, Table A.2;
# 15444-15 adds CAP and CPF; 15444-2 adds more in FF70-FF7F: refused as unknown).
_J2K_DECODING = frozenset({0x50, 0x51, 0x52, 0x53, 0x55, 0x57, 0x58, 0x59, 0x5C, 0x5D, 0x5E, 0x5F, 0x60, 0x61, 0x63})
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# Boxes decoding reads (Annex I.5: signature, file type, reader requirements; I.5.3 header
# box contents; the codestream). Everything else (xml, uuid, uinf, jp2i, res...) goes.
_JP2_KEPT = frozenset({b"jP  ", b"ftyp", b"rreq", b"jp2h", b"jp2c"})
_JP2_HEADER_KEPT = frozenset({b"ihdr", b"bpcc", b"colr", b"pclr", b"cmap", b"cdef"})


def _scan_jpeg_2000(frame: memoryview, edits: _Edits) -> None:
    if bytes(frame[: len(_JP2_SIGNATURE)]) == _JP2_SIGNATURE:
        _scan_jp2(frame, edits)
    else:
        start = _find(frame, _J2K_START)
        edits.remove(0, start, stray=True)
        _scan_codestream(frame, start, len(frame), edits)


def _boxes(frame: memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, content start, box end) of each box in [start, end) (I.4)."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            if _PADDING.fullmatch(frame[pos:end]):
                return  # the padding byte of an odd-length fragment (PS3.5 A.4)
            raise StreamError("JP2 box header truncated")
        length, kind = struct.unpack_from(">I4s", frame, pos)
        content = pos + 8
        if length == 1:
            if pos + 16 > end:
                raise StreamError("JP2 box header truncated")
            length = struct.unpack_from(">Q", frame, pos + 8)[0]
            content = pos + 16
        elif length == 0:
            length = end - pos
        if length < content - pos or pos + length > end:
            raise StreamError("JP2 box length invalid")
        yield kind, pos, content, pos + length
        pos += length


def _scan_jp2(frame: memoryview, edits: _Edits) -> None:
    codestreams = 0
    for kind, start, content, end in _boxes(frame, 0, len(frame)):
        if kind not in _JP2_KEPT:
            edits.remove(start, end)
        elif kind == b"jp2h":
            removed = 0
            for sub, sub_start, _, sub_end in _boxes(frame, content, end):
                if sub not in _JP2_HEADER_KEPT or (sub == b"colr" and frame[sub_start + 8] != 1):
                    # colr methods other than 1 (enumerated) embed an ICC profile, which has text.
                    edits.remove(sub_start, sub_end)
                    removed += sub_end - sub_start
            if removed:
                _fix_box_length(frame, start, content, end, end - start - removed, edits)
        elif kind == b"jp2c":
            codestreams += 1
            before = sum(e.end - e.start - len(e.data) for e in edits.splices)
            _scan_codestream(frame, content, end, edits)
            shrunk = sum(e.end - e.start - len(e.data) for e in edits.splices) - before
            if shrunk:
                _fix_box_length(frame, start, content, end, end - start - shrunk, edits)
    if codestreams != 1:
        raise StreamError("JP2 file without exactly one codestream box")


def _fix_box_length(frame: memoryview, start: int, content: int, end: int, new_length: int, edits: _Edits) -> None:
    length = struct.unpack_from(">I", frame, start)[0]
    if length == 0:
        return  # runs to the end of the file: still true
    if length == 1:
        edits.replace(start + 8, start + 16, struct.pack(">Q", new_length))
    else:
        edits.replace(start, start + 4, struct.pack(">I", new_length))


def _scan_codestream(frame: memoryview, start: int, end: int, edits: _Edits) -> None:
    """Remove COM marker segments from the main and tile-part headers (A.9.2), fixing each
    tile-part's Psot (A.4.2) and the TLM tile-part lengths (A.7.1) they count."""
    if struct.unpack_from(">H", frame, start)[0] != 0xFF4F:
        raise StreamError("JPEG 2000 SOC expected")
    pos = start + 2
    tlm: list[tuple[int, int]] = []  # (offset of a Ptlm field, its size), in tile-part order
    shrinkage: list[int] = []  # bytes removed from each tile-part
    while True:
        marker = _j2k_marker(frame, pos, end)
        if marker == _J2K_SOT:
            break
        length = _j2k_segment_end(frame, pos, end) - pos
        if marker == _J2K_COM:
            edits.remove(pos, pos + length)
        elif marker == _J2K_TLM:
            tlm += _tlm_fields(frame, pos, pos + length)
        elif marker not in _J2K_DECODING:
            raise StreamError("unknown JPEG 2000 marker")
        pos += length
    while True:
        marker = _j2k_marker(frame, pos, end)
        if marker == _J2K_EOC:
            _trailing(frame[:end], pos + 2, edits)
            break
        if marker != _J2K_SOT:
            raise StreamError("JPEG 2000 SOT expected")
        psot = struct.unpack_from(">I", frame, pos + 6)[0]
        tile_end = _tile_part_end(frame, pos, psot, end)
        removed = 0
        header = _j2k_segment_end(frame, pos, tile_end)
        while True:
            marker = _j2k_marker(frame, header, tile_end)
            if marker == _J2K_SOD:
                break
            segment_end = _j2k_segment_end(frame, header, tile_end)
            if marker == _J2K_COM:
                edits.remove(header, segment_end)
                removed += segment_end - header
            elif marker not in _J2K_DECODING:
                raise StreamError("unknown JPEG 2000 marker")
            header = segment_end
        if removed and psot:
            edits.replace(pos + 6, pos + 10, struct.pack(">I", psot - removed))
        shrinkage.append(removed)
        pos = tile_end
    _fix_tlm(frame, tlm, shrinkage, edits)


def _j2k_marker(frame: memoryview, pos: int, end: int) -> int:
    if pos + 2 > end or frame[pos] != 0xFF:
        raise StreamError("JPEG 2000 marker expected")
    return int(frame[pos + 1])


def _j2k_segment_end(frame: memoryview, pos: int, end: int) -> int:
    if pos + 4 > end:
        raise StreamError("JPEG 2000 stream truncated")
    segment_end = pos + 2 + int(struct.unpack_from(">H", frame, pos + 2)[0])
    if segment_end > end or segment_end < pos + 4:
        raise StreamError("JPEG 2000 marker segment length invalid")
    return segment_end


def _tile_part_end(frame: memoryview, pos: int, psot: int, end: int) -> int:
    """Psot counts from the SOT marker to the end of the tile-part; 0: up to EOC (A.4.2)."""
    if psot == 0:
        if end - 2 < pos or bytes(frame[end - 2 : end]) != b"\xff\xd9":
            eoc = bytes(frame[pos:end]).rfind(b"\xff\xd9")
            if eoc < 0:
                raise StreamError("JPEG 2000 EOC not found")
            return pos + eoc
        return end - 2
    if pos + psot > end:
        raise StreamError("JPEG 2000 tile-part length invalid")
    return pos + psot


def _tlm_fields(frame: memoryview, start: int, end: int) -> list[tuple[int, int]]:
    """Positions of the Ptlm fields of one TLM segment (A.7.1: Ztlm, Stlm, then Ttlm/Ptlm)."""
    stlm = frame[start + 5]
    tile_bytes = (stlm >> 4) & 0x3
    length_bytes = 4 if stlm & 0x40 else 2
    if tile_bytes == 3:
        raise StreamError("JPEG 2000 TLM invalid")
    entry = tile_bytes + length_bytes
    fields = []
    pos = start + 6
    while pos + entry <= end:
        fields.append((pos + tile_bytes, length_bytes))
        pos += entry
    return fields


def _fix_tlm(frame: memoryview, tlm: list[tuple[int, int]], shrinkage: list[int], edits: _Edits) -> None:
    if not tlm or not any(shrinkage):
        return
    if len(tlm) != len(shrinkage):
        raise StreamError("JPEG 2000 TLM does not list every tile-part")
    for (pos, size), removed in zip(tlm, shrinkage, strict=True):
        if removed:
            old = int.from_bytes(frame[pos : pos + size], "big")
            edits.replace(pos, pos + size, (old - removed).to_bytes(size, "big"))


_SCANNERS: dict[str, Scanner] = {
    **dict.fromkeys(
        (
            "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
            "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
            "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
            "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        ),
        _scan_jpeg,
    ),
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), _scan_jpeg_ls),
    **dict.fromkeys(
        (
            "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
            "1.2.840.10008.1.2.4.91",  # JPEG 2000
            "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 multi-component lossless
            "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 multi-component
            "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
            "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
            "1.2.840.10008.1.2.4.203",  # HTJ2K
        ),
        _scan_jpeg_2000,
    ),
}
