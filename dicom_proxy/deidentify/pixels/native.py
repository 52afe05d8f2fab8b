"""Native (uncompressed) little-endian Pixel Data: mask the stored bytes in place.

PS3.5 8.1.1 and Annex A.1/A.2/A.5 (Implicit, Explicit and Deflated Explicit VR Little Endian).
No decode/encode round trip: a numpy view over the stored bytes is filled directly, so every
byte outside the rectangles (unused high bits and overlay bits included) stays identical, and
the transfer syntax does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicom_proxy.deidentify.pixels.base import (
    Geometry,
    MaskPlan,
    Photometric,
    PixelError,
    fill_frames,
    resolve_fill,
)
from dicom_proxy.deidentify.pixels.rules import Box


@dataclass(frozen=True)
class NativeCodec:
    syntaxes: frozenset[UID] = frozenset(
        {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
    )

    def mask(self, dataset: Dataset, plan: MaskPlan) -> None:
        g = Geometry.of(dataset)
        buffer = bytearray(dataset.PixelData)
        fill = resolve_fill(plan, g, g.photometric)
        if g.bits_allocated == 1:
            _mask_single_bit(buffer, g, plan.boxes, fill)
        elif g.photometric == Photometric.YBR_FULL_422 and g.samples == 3:
            _mask_ybr_422(buffer, g, plan.boxes, fill)
        else:
            frames = _frames_view(buffer, g)
            fill_frames(frames, plan.boxes, fill)
            if plan.clear_unused_bits:
                _clear_unused_bits(frames, g)
        dataset.PixelData = bytes(buffer)


CODEC = NativeCodec()


def _dtype(g: Geometry) -> np.dtype[np.integer]:
    if g.bits_allocated not in (8, 16, 32, 64):
        raise PixelError("unsupported Bits Allocated for native Pixel Data")
    return np.dtype(f"<{'i' if g.signed else 'u'}{g.bits_allocated // 8}")


def _checked(buffer: bytearray, needed: int) -> memoryview:
    if len(buffer) < needed:
        raise PixelError("Pixel Data is shorter than the Image Pixel Module describes")
    return memoryview(buffer)[:needed]  # trailing padding byte (PS3.5 7.1.1) stays as is


def _frames_view(buffer: bytearray, g: Geometry) -> np.ndarray:
    """(frames, rows, columns, samples) view; planar configuration 1 stores colour planes
    one after another per frame (PS3.3 C.7.6.3.1.3), so transpose the view, not the data."""
    dtype = _dtype(g)
    count = g.frames * g.rows * g.columns * g.samples
    flat = np.frombuffer(_checked(buffer, count * dtype.itemsize), dtype=dtype)
    if g.samples > 1 and g.planar == 1:
        return flat.reshape(g.frames, g.samples, g.rows, g.columns).transpose(0, 2, 3, 1)
    return flat.reshape(g.frames, g.rows, g.columns, g.samples)


def _mask_ybr_422(
    buffer: bytearray, g: Geometry, boxes: tuple[Box, ...], fill: tuple[int, ...]
) -> None:
    """YBR_FULL_422 native: each pair of pixels is stored as Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2).

    Boxes widen to whole pairs so no half-masked pair keeps the chroma of the text.
    """
    if g.columns % 2:
        raise PixelError("YBR_FULL_422 with an odd number of columns")
    dtype = _dtype(g)
    count = g.frames * g.rows * (g.columns // 2) * 4
    cells = np.frombuffer(_checked(buffer, count * dtype.itemsize), dtype=dtype)
    pairs = cells.reshape(g.frames, g.rows, g.columns // 2, 4)
    value = np.asarray((fill[0], fill[0], fill[1], fill[2]), dtype=dtype)
    for box in boxes:
        pairs[:, box.top : box.bottom, box.left // 2 : (box.right + 1) // 2, :] = value


def _mask_single_bit(
    buffer: bytearray, g: Geometry, boxes: tuple[Box, ...], fill: tuple[int, ...]
) -> None:
    """Bits Allocated 1: pixels are packed LSB first, frames not byte aligned (PS3.5 8.1.1)."""
    if g.samples != 1:
        raise PixelError("single-bit Pixel Data with more than one sample")
    count = g.frames * g.rows * g.columns
    nbytes = (count + 7) // 8
    packed = np.frombuffer(_checked(buffer, nbytes), dtype=np.uint8)
    bits = np.unpackbits(packed, bitorder="little")
    frames = bits[:count].reshape(g.frames, g.rows, g.columns, 1)
    fill_frames(frames, boxes, (1 if fill[0] else 0,))
    repacked = np.packbits(bits, bitorder="little")
    buffer[:nbytes] = repacked.tobytes()


def _clear_unused_bits(frames: np.ndarray, g: Geometry) -> None:
    """Bits above High Bit carry no pixel value (PS3.5 8.1.1): zero them for unsigned data,
    sign-extend for signed data; pixel values stay the same."""
    if g.bits_stored >= g.bits_allocated:
        return
    shift = g.bits_allocated - g.bits_stored
    if g.signed:
        frames[...] = (frames << shift) >> shift  # arithmetic shift sign-extends
    else:
        frames &= frames.dtype.type((1 << g.bits_stored) - 1)
