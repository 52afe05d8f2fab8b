"""codec: Pixel Data passes through as a view (no copy) and comes out byte for byte."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicom_proxy import part10


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # native OW, trailing padding after Pixel Data
        "MR_small_bigendian.dcm",  # big endian
        "JPEG2000.dcm",  # encapsulated
        "SC_rgb_jpeg.dcm",  # declared explicit, implicit in fact, encapsulated
        "MR_small_RLE.dcm",
        "rtplan.dcm",  # no Pixel Data
        "image_dfl.dcm",  # deflated: encoded whole
    ],
)
def test_round_trip_keeps_every_element_and_pixel_bytes(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    original = dcmread(path)
    decoded = part10.read_file(path)  # type: ignore[arg-type]
    encoded = part10.encode(decoded)
    again = dcmread(BytesIO(b"".join(encoded.parts)))
    assert {e.tag for e in again} == {e.tag for e in original}
    for element in original:
        assert again[element.tag].value == element.value, element.tag
    if "PixelData" in original and original.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1.99":
        # The untouched Pixel Data value is a part of its own: not copied, not searched.
        assert encoded.pixel_value is not None
        assert isinstance(encoded.parts[encoded.pixel_value], memoryview)
        assert bytes(encoded.parts[encoded.pixel_value]) == original.PixelData
        pixel_length = len(encoded.parts[encoded.pixel_value])
        assert len(encoded.searchable()) == sum(len(p) for p in encoded.parts) - pixel_length


def test_materialize_gives_pixel_data_its_own_bytes() -> None:
    path = get_testdata_file("CT_small.dcm")
    decoded = part10.read_file(path)  # type: ignore[arg-type]
    part10.materialize_pixel_data(decoded)
    assert isinstance(decoded.PixelData, bytes)
    encoded = part10.encode(decoded)
    assert encoded.pixel_value is None and len(encoded.parts) == 1
    assert dcmread(BytesIO(encoded.parts[0])).PixelData == dcmread(path).PixelData
