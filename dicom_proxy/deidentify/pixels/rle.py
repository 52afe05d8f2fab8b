"""RLE Lossless (PS3.5 Annex G): decode, mask, re-encode with pydicom's native RLE encoder."""

from __future__ import annotations

from pydicom.uid import RLELossless

from dicom_proxy.deidentify.pixels.base import EncapsulatedCodec

CODEC = EncapsulatedCodec(syntaxes=frozenset({RLELossless}), lossless={RLELossless: RLELossless})
