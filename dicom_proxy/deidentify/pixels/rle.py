"""RLE Lossless (PS3.5 Annex G): decode, mask, re-encode with pydicom's native RLE encoder."""

from __future__ import annotations

from pydicom.uid import RLELossless

from dicom_proxy.deidentify.pixels.base import EncapsulatedCodec

# pylibjpeg-rle is much faster than pydicom's numpy RLE codec (measured on RGB 480x640:
# decode 1.6 vs 26 ms/frame, encode 20 vs 300 ms/frame), with identical output.
CODEC = EncapsulatedCodec(
    syntaxes=frozenset({RLELossless}),
    lossless={RLELossless: RLELossless},
    decoding_plugin="pylibjpeg",
    encoding_plugin="pylibjpeg",
)
