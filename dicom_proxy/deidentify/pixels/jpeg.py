"""JPEG (PS3.5 A.4.1, ISO 10918-1): decode only.

pydicom has no JPEG encoder, so masked images are stored as Explicit VR Little Endian.
For the lossy processes (baseline, extended) that is also what PS3.15 wants: the decoded
image is kept as it is, not compressed lossily a second time.
"""

from __future__ import annotations

from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1

from dicom_proxy.deidentify.pixels.base import EncapsulatedCodec

CODEC = EncapsulatedCodec(
    syntaxes=frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}),
    lossy=frozenset({JPEGBaseline8Bit, JPEGExtended12Bit}),
)
