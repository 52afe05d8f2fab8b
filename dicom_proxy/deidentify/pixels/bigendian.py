"""Explicit VR Big Endian (retired, PS3.5 A.3): decode, mask, store as Explicit VR Little Endian.

pydicom cannot write Pixel Data back as big endian from an array, and the syntax is retired,
so the masked object leaves in the little-endian default syntax. Values pydicom keeps as raw
bytes (OW, OL, OF, OD, OV: LUT data, for instance) are byte-swapped to match, and every data
set is marked as little endian so it is written in the new byte order (PS3.5 7.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian

from dicom_proxy.deidentify.pixels.base import (
    ArrayPixels,
    DecodedPixels,
    EncapsulatedCodec,
    MaskPlan,
    PixelError,
)

_WORD_SIZE = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class BigEndianCodec:
    syntaxes: frozenset[UID] = frozenset({ExplicitVRBigEndian})

    def decode(self, dataset: Dataset) -> ArrayPixels:
        return _DECODER.decode(dataset)

    def encode(self, dataset: Dataset, pixels: DecodedPixels, plan: MaskPlan) -> None:
        _DECODER.encode(dataset, pixels, plan)  # -> Explicit VR Little Endian
        to_little_endian(dataset)


# No lossless target: pydicom decodes big endian and stores the result little endian.
_DECODER = EncapsulatedCodec(frozenset({ExplicitVRBigEndian}))


CODEC = BigEndianCodec()


def to_little_endian(dataset: Dataset, *, pixel_data: bool = False) -> None:
    """Byte-swap the binary word values (OW, OF, OD, OL, OV) of a big endian data set so it
    can be written little endian (PS3.5 7.3); Pixel Data too when `pixel_data`."""
    for element in list(dataset):  # iterating converts raw elements with the original order
        if element.VR == "SQ":
            for item in element.value:
                to_little_endian(item, pixel_data=pixel_data)
        elif (pixel_data or element.tag != _PIXEL_DATA) and element.VR in _WORD_SIZE and element.value:
            element.value = _swap(element.value, _WORD_SIZE[element.VR])
    dataset.set_original_encoding(False, True, dataset.original_character_set)


def _swap(value: bytes, size: int) -> bytes:
    if len(value) % size:
        raise PixelError("binary value length is not a multiple of its word size")
    return np.frombuffer(value, dtype=f">u{size}").astype(f"<u{size}").tobytes()
