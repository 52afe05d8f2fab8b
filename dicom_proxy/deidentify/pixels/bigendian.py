"""Explicit VR Big Endian (retired, PS3.5 A.3): decode, mask, store as Explicit VR Little Endian.

pydicom cannot write Pixel Data back as big endian from an array, and the syntax is retired,
so the masked object leaves in the little-endian default syntax. Values pydicom keeps as raw
bytes (OW, OL, OF, OD, OV: LUT data, for instance) are byte-swapped to match, and every data
set is marked as little endian so it is written in the new byte order (PS3.5 7.3).
"""

from __future__ import annotations

from dataclasses import dataclass

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
from dicom_proxy.part10 import ConversionError, to_little_endian


@dataclass(frozen=True)
class BigEndianCodec:
    syntaxes: frozenset[UID] = frozenset({ExplicitVRBigEndian})

    def decode(self, dataset: Dataset) -> ArrayPixels:
        return _DECODER.decode(dataset)

    def encode(self, dataset: Dataset, pixels: DecodedPixels, plan: MaskPlan) -> None:
        _DECODER.encode(dataset, pixels, plan)  # -> Explicit VR Little Endian
        try:
            to_little_endian(dataset)
        except ConversionError as exc:
            raise PixelError(str(exc)) from None


# No lossless target: pydicom decodes big endian and stores the result little endian.
_DECODER = EncapsulatedCodec(frozenset({ExplicitVRBigEndian}))


CODEC = BigEndianCodec()
