"""Transfer syntax -> codec family (PS3.5 Annex A), like pydicom's decoder registry."""

from __future__ import annotations

from pydicom.uid import UID

from dicom_proxy.deidentify.pixels import bigendian, jpeg, jpeg2000, jpegls, native, rle
from dicom_proxy.deidentify.pixels.base import PixelCodec

_FAMILIES: tuple[PixelCodec, ...] = (
    native.CODEC,
    bigendian.CODEC,
    rle.CODEC,
    jpeg.CODEC,
    jpegls.CODEC,
    jpeg2000.CODEC,
)

CODECS: dict[UID, PixelCodec] = {syntax: codec for codec in _FAMILIES for syntax in codec.syntaxes}


def codec_for(transfer_syntax_uid: str) -> PixelCodec | None:
    """The codec family for a transfer syntax; None when none can decode it (MPEG, HEVC)."""
    return CODECS.get(UID(transfer_syntax_uid))
