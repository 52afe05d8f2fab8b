"""JPEG 2000 and HTJ2K (PS3.5 A.4.4, A.4.11; ISO 15444-1/-15).

Lossless JPEG 2000 is re-encoded as itself (pylibjpeg-openjpeg). The decoder undoes the
reversible colour transform, so the masked array is RGB; the encoder applies it again and sets
YBR_RCT. HTJ2K has no encoder in pydicom: stored as Explicit VR Little Endian.

Lossy JPEG 2000 (.91) goes to Explicit VR Little Endian unless lossy recompression is allowed;
then it is re-encoded at the compression ratio of the original (the only rate we can recover).
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
)

from dicom_proxy.deidentify.pixels.base import EncapsulatedCodec, Geometry


def original_ratio(dataset: Dataset, syntax: UID) -> dict[str, Any] | None:
    g = Geometry.of(dataset)
    uncompressed = g.frames * g.rows * g.columns * g.samples * ((g.bits_allocated + 7) // 8)
    compressed = len(dataset.PixelData)
    if compressed <= 0:
        return None
    return {"j2k_cr": [max(1.0, uncompressed / compressed)]}


CODEC = EncapsulatedCodec(
    syntaxes=frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}),
    lossless={JPEG2000Lossless: JPEG2000Lossless},
    lossy=frozenset({JPEG2000, HTJ2K}),
    lossy_options=original_ratio,
)
