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

from dicom_proxy.deidentify.pixels.base import EncapsulatedCodec, MaskPlan, PixelError
from dicom_proxy.part10 import ConversionError, to_little_endian


@dataclass(frozen=True)
class BigEndianCodec:
    syntaxes: frozenset[UID] = frozenset({ExplicitVRBigEndian})

    def mask(self, dataset: Dataset, plan: MaskPlan) -> None:
        EncapsulatedCodec(self.syntaxes).mask(dataset, plan)  # -> Explicit VR Little Endian
        try:
            to_little_endian(dataset)
        except ConversionError as exc:
            raise PixelError(str(exc)) from None


CODEC = BigEndianCodec()
