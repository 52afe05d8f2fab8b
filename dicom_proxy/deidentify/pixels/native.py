"""Native (uncompressed) little-endian Pixel Data: mask a copy of the stored bytes.

PS3.5 8.1.1 and Annex A.1/A.2/A.5 (Implicit, Explicit and Deflated Explicit VR Little Endian).
No decode/encode round trip: "decoding" is a numpy view over a copy of the stored bytes, filled
directly, so every byte outside the rectangles (unused high bits and overlay bits included)
stays identical, and the transfer syntax does not change.
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
    DecodedPixels,
    Geometry,
    MaskPlan,
    Photometric,
    PixelError,
    fill_frames,
    luminance,
)
from dicom_proxy.deidentify.pixels.rules import Box


@dataclass(frozen=True)
class NativeCodec:
    syntaxes: frozenset[UID] = frozenset(
        {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
    )

    def decode(self, dataset: Dataset) -> NativePixels:
        """A copy of the stored bytes with a view per layout: "decoding" is only a view."""
        g = Geometry.of(dataset)
        buffer = bytearray(dataset.PixelData)
        if g.bits_allocated == 1:
            if g.samples != 1:
                raise PixelError("single-bit Pixel Data with more than one sample")
            count = g.frames * g.rows * g.columns
            packed = np.frombuffer(_checked(buffer, (count + 7) // 8), dtype=np.uint8)
            bits = np.unpackbits(packed, bitorder="little")[:count]
            return NativePixels(buffer, g, bits.reshape(g.frames, g.rows, g.columns, 1))
        if g.photometric == Photometric.YBR_FULL_422 and g.samples == 3:
            return NativePixels(buffer, g, _pairs_view(buffer, g))
        return NativePixels(buffer, g, _frames_view(buffer, g))

    def encode(self, dataset: Dataset, pixels: DecodedPixels, plan: MaskPlan) -> None:
        if not isinstance(pixels, NativePixels):
            raise PixelError("pixels were decoded by another codec family")
        g = pixels.geometry
        if g.bits_allocated == 1:
            count = g.frames * g.rows * g.columns
            packed = bytearray(np.packbits(pixels.cells.reshape(count), bitorder="little").tobytes())
            if count % 8:  # bits after the last pixel (frames are not byte aligned) stay as they were
                low = (1 << (count % 8)) - 1
                packed[-1] = (packed[-1] & low) | (pixels.buffer[len(packed) - 1] & ~low & 0xFF)
            pixels.buffer[: len(packed)] = packed
        elif plan.clear_unused_bits and not _is_422(g):
            _clear_unused_bits(pixels.cells, g)
        dataset.PixelData = bytes(pixels.buffer)


@dataclass(frozen=True)
class NativePixels:
    """A copy of the stored bytes and a numpy view of its cells; filling writes the copy.

    `cells` is (frames, rows, columns, samples) except for YBR_FULL_422, where it is
    (frames, rows, columns / 2, 4): pairs of pixels stored as Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2).
    """

    buffer: bytearray
    geometry: Geometry
    cells: np.ndarray

    def grey(self) -> np.ndarray:
        g = self.geometry
        grey: np.ndarray
        if _is_422(g):
            grey = self.cells[..., :2].reshape(g.frames, g.rows, g.columns)
        else:
            grey = luminance(self.cells, g.photometric)
        if g.bits_stored < g.bits_allocated and g.bits_allocated > 1:
            # Bits above High Bit are not part of the value (PS3.5 8.1.1): overlay bits there
            # must not look like bright text to a detector.
            shift = g.bits_allocated - g.bits_stored
            grey = (grey << shift) >> shift if g.signed else grey & grey.dtype.type((1 << g.bits_stored) - 1)
        return grey

    def fill(self, boxes: tuple[Box, ...], fill: tuple[int, ...]) -> None:
        g = self.geometry
        if g.bits_allocated == 1:
            fill_frames(self.cells, boxes, (1 if fill[0] else 0,))
        elif _is_422(g):
            _fill_pairs(self.cells, boxes, fill)
        else:
            fill_frames(self.cells, boxes, fill)


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


def _is_422(g: Geometry) -> bool:
    return g.photometric == Photometric.YBR_FULL_422 and g.samples == 3 and g.bits_allocated > 1


def _pairs_view(buffer: bytearray, g: Geometry) -> np.ndarray:
    if g.columns % 2:
        raise PixelError("YBR_FULL_422 with an odd number of columns")
    dtype = _dtype(g)
    count = g.frames * g.rows * (g.columns // 2) * 4
    cells = np.frombuffer(_checked(buffer, count * dtype.itemsize), dtype=dtype)
    return cells.reshape(g.frames, g.rows, g.columns // 2, 4)


def _fill_pairs(pairs: np.ndarray, boxes: tuple[Box, ...], fill: tuple[int, ...]) -> None:
    """Boxes widen to whole pairs so no half-masked pair keeps the chroma of the text."""
    value = np.asarray((fill[0], fill[0], fill[1], fill[2]), dtype=pairs.dtype)
    for box in boxes:
        pairs[:, box.top : box.bottom, box.left // 2 : (box.right + 1) // 2, :] = value


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
