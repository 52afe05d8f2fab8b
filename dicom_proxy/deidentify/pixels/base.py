"""The abstraction every codec family implements: decode -> (find boxes) -> mask -> encode.

A codec family is one small module (``native``, ``bigendian``, ``rle``, ``jpeg``, ``jpegls``,
``jpeg2000``) exposing a ``CODEC`` object with the transfer syntaxes it handles, a ``decode``
method returning `DecodedPixels` and an ``encode`` method writing them back; the registry picks
it by transfer syntax, like pydicom 3's ``pixels`` backends. Decoding once lets every source of
boxes (site rules, text detectors) look at the same pixels before anything is re-encoded.

Masking works on a 4-D view ``(frames, rows, columns, samples)`` of the pixel cells so one
vectorised slice assignment per rectangle fills every frame (PS3.3 C.7.6.3.1.3: frames are
stored one after another, pixels row by row).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless

from dicom_proxy.deidentify.pixels.rules import Box


class PixelError(Exception):
    """Pixel Data could not be decoded, masked or re-encoded. The message holds no values."""


class LayoutError(PixelError):
    """The Image Pixel Module attributes are missing or not numbers: whatever the pixels
    hold cannot be known, so the object is refused whatever its risk."""


class Photometric(str, Enum):
    """Photometric Interpretation values (PS3.3 C.7.6.3.1.2) the stage knows how to fill."""

    MONOCHROME1 = "MONOCHROME1"
    MONOCHROME2 = "MONOCHROME2"
    PALETTE_COLOR = "PALETTE COLOR"
    RGB = "RGB"
    YBR_FULL = "YBR_FULL"
    YBR_FULL_422 = "YBR_FULL_422"
    YBR_RCT = "YBR_RCT"
    YBR_ICT = "YBR_ICT"


@dataclass(frozen=True)
class MaskPlan:
    """What to fill: resolved boxes (union of all matching rules) and an optional fill value."""

    boxes: tuple[Box, ...]
    fill: tuple[int, ...] | None = None
    allow_lossy_recompression: bool = False
    # An overlay is embedded in the unused high bits of Pixel Data (retired, PS3.5 8.1.2):
    # clear those bits in every pixel, since the overlay may show text outside the boxes.
    clear_unused_bits: bool = False


@dataclass(frozen=True)
class Geometry:
    """The Image Pixel Module attributes that define the layout (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int

    @classmethod
    def of(cls, ds: Dataset) -> Geometry:
        try:
            frames = int(ds.get("NumberOfFrames") or 1)
            return cls(
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                frames=max(frames, 1),
                samples=int(ds.get("SamplesPerPixel") or 1),
                bits_allocated=int(ds.BitsAllocated),
                bits_stored=int(ds.get("BitsStored") or ds.BitsAllocated),
                signed=int(ds.get("PixelRepresentation") or 0) == 1,
                photometric=str(ds.get("PhotometricInterpretation", "")).strip(),
                planar=int(ds.get("PlanarConfiguration") or 0),
            )
        except (AttributeError, TypeError, ValueError):
            raise LayoutError("Image Pixel Module attributes missing or invalid") from None


class DecodedPixels(Protocol):
    """Decoded Pixel Data of one object, owned by the pixel stage until it is encoded."""

    @property
    def geometry(self) -> Geometry:
        """The layout of the decoded values (the decoder may change colour space)."""
        ...

    def grey(self) -> np.ndarray:
        """(frames, rows, columns) luminance in stored units (PS3.3 C.7.6.3.1.2): the single
        sample of monochrome and palette images, Y of YBR, a weighted sum of RGB."""
        ...

    def fill(self, boxes: tuple[Box, ...], fill: tuple[int, ...]) -> None:
        """Fill `boxes` in every frame with `fill` (one value per sample, stored units)."""
        ...


class PixelCodec(Protocol):
    """One codec family: the transfer syntaxes it handles, how to decode and re-encode them."""

    @property
    def syntaxes(self) -> frozenset[UID]: ...

    def decode(self, dataset: Dataset) -> DecodedPixels:
        """Decode every frame; the dataset is not changed. Raises PixelError."""
        ...

    def encode(self, dataset: Dataset, pixels: DecodedPixels, plan: MaskPlan) -> None:
        """Store `pixels` (as returned by this codec's `decode`) as Pixel Data, losslessly in
        the original syntax where an encoder exists; update the syntax if it changes."""
        ...


def luminance(frames: np.ndarray, photometric: str) -> np.ndarray:
    """(frames, rows, columns) grey values of a (frames, rows, columns, samples) array.

    YBR (PS3.3 C.7.6.3.1.2) already carries luminance in its first sample; RGB is weighted as
    ITU-R BT.601 does (the weights YBR_FULL uses); float32 for up to 16 bits, else float64.
    """
    if frames.shape[-1] == 1 or photometric.startswith("YBR"):
        return frames[..., 0]
    dtype = np.float32 if frames.dtype.itemsize <= 2 else np.float64
    weights = np.asarray((0.299, 0.587, 0.114), dtype=dtype)
    grey: np.ndarray = np.tensordot(frames[..., :3].astype(dtype), weights, axes=1)
    return grey


def default_fill(photometric: str, samples: int, bits_stored: int, signed: bool) -> tuple[int, ...]:
    """Black in the stored representation (PS3.3 C.7.6.3.1.2).

    MONOCHROME2: the smallest storable value; MONOCHROME1 inverts, so the largest; RGB: zeros;
    YBR: luminance 0 with neutral chroma (half range), since chroma 0 would be green.
    """
    low = -(1 << (bits_stored - 1)) if signed else 0
    high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    if photometric == Photometric.MONOCHROME1:
        return (high,)
    if photometric.startswith("YBR") and samples == 3:
        mid = 1 << (bits_stored - 1)
        return (0, mid, mid)
    return (low,) * samples


def fill_frames(frames: np.ndarray, boxes: tuple[Box, ...], fill: tuple[int, ...]) -> None:
    """Fill each box in every frame of a (frames, rows, columns, samples) array or view."""
    value = np.asarray(fill, dtype=frames.dtype) if len(fill) > 1 else frames.dtype.type(fill[0])
    for box in boxes:
        frames[:, box.top : box.bottom, box.left : box.right, :] = value


def check_fill(fill: tuple[int, ...], geometry: Geometry, photometric: str) -> tuple[int, ...]:
    """Return the fill per sample, validated against the layout (an explicit rule fill)."""
    if len(fill) == 1 and geometry.samples > 1:
        fill = fill * geometry.samples
    if len(fill) != geometry.samples:
        raise PixelError("rule fill has a different number of samples than the image")
    low = -(1 << (geometry.bits_stored - 1)) if geometry.signed else 0
    high = (1 << (geometry.bits_stored - 1)) - 1 if geometry.signed else (1 << geometry.bits_stored) - 1
    if not all(low <= v <= high for v in fill):
        raise PixelError("rule fill is outside the range of Bits Stored")
    return fill


def resolve_fill(plan: MaskPlan, geometry: Geometry, photometric: str) -> tuple[int, ...]:
    if plan.fill is not None:
        return check_fill(plan.fill, geometry, photometric)
    return default_fill(photometric, geometry.samples, geometry.bits_stored, geometry.signed)


# Lossy Image Compression Method defined terms (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHOD: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}

LossyOptions = Callable[[Dataset, UID], dict[str, Any] | None]


@dataclass(frozen=True)
class EncapsulatedCodec:
    """Decode with pydicom, mask, re-encode (PS3.5 8.2, Annex A.4).

    `lossless`: original syntax -> the lossless syntax to re-encode into (itself when pydicom
    has an encoder). Syntaxes missing there are stored as Explicit VR Little Endian (PS3.5
    A.2), which never loses anything. `lossy` originals are re-encoded lossily only when the
    site allows it and `lossy_options` can supply encoder parameters; otherwise they go to
    Explicit VR Little Endian too, so the image is not degraded a second time.
    """

    syntaxes: frozenset[UID]
    lossless: Mapping[UID, UID] = field(default_factory=dict)
    lossy: frozenset[UID] = frozenset()
    lossy_options: LossyOptions | None = None
    # Plugin to try first when several can decode (speed); any other is the fallback.
    decoding_plugin: str = ""
    encoding_plugin: str = ""

    def decode(self, dataset: Dataset) -> ArrayPixels:
        array, meta = decode(dataset, self.decoding_plugin)
        geometry = decoded_geometry(dataset, meta)
        return ArrayPixels(array, as_frames(array, geometry), geometry)

    def encode(self, dataset: Dataset, pixels: DecodedPixels, plan: MaskPlan) -> None:
        if not isinstance(pixels, ArrayPixels):
            raise PixelError("pixels were decoded by another codec family")
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
        target, options = self._target(dataset, syntax, plan)
        if target is not None:
            try:
                store_encapsulated(dataset, pixels.array, pixels.geometry, target, options, self.encoding_plugin)
                return
            except PixelError:
                # The encoder rejects this layout (e.g. RLE with 32-bit samples): storing
                # uncompressed loses nothing, so it is always an acceptable fallback.
                pass
        array, geometry = pixels.array, pixels.geometry
        if syntax in self.lossy and geometry.samples == 3 and geometry.photometric == Photometric.YBR_FULL:
            # A lossy original stored uncompressed is stored as a viewer shows it: RGB. YBR_FULL
            # is not allowed by every IOD (the US Image Module, PS3.3 C.8.5.6.1.2).
            array = convert_color_space(array, "YBR_FULL", "RGB")
            geometry = dataclasses.replace(geometry, photometric=Photometric.RGB.value)
        store_native(dataset, array, geometry)

    def _target(self, dataset: Dataset, syntax: UID, plan: MaskPlan) -> tuple[UID | None, dict[str, Any]]:
        if syntax in self.lossy:
            if plan.allow_lossy_recompression and self.lossy_options is not None:
                options = self.lossy_options(dataset, syntax)
                if options is not None:
                    return syntax, options
            return None, {}
        return self.lossless.get(syntax), {}


@dataclass(frozen=True)
class ArrayPixels:
    """Pixels decoded by pydicom: the array and its (frames, rows, columns, samples) view."""

    array: np.ndarray
    frames: np.ndarray
    geometry: Geometry

    def grey(self) -> np.ndarray:
        return luminance(self.frames, self.geometry.photometric)

    def fill(self, boxes: tuple[Box, ...], fill: tuple[int, ...]) -> None:
        fill_frames(self.frames, boxes, fill)


def decode(dataset: Dataset, preferred_plugin: str = "") -> tuple[np.ndarray, dict[str, Any]]:
    """All frames, in the stored colour space (no YBR -> RGB conversion), pixel-interleaved."""
    options: dict[str, Any] = {"as_rgb": False}  # keep the stored colour space
    plugins = (preferred_plugin, "") if preferred_plugin else ("",)
    error: Exception | None = None
    for plugin in plugins:  # "" lets pydicom try every available plugin
        try:
            decoder = get_decoder(dataset.file_meta.TransferSyntaxUID)
            array, meta = decoder.as_array(dataset, decoding_plugin=plugin, **options)
            break
        except Exception as exc:
            error = exc
    else:
        raise PixelError(f"cannot decode Pixel Data ({type(error).__name__})") from None
    if not array.flags.writeable:
        array = array.copy()
    return array, dict(meta)


def decoded_geometry(dataset: Dataset, meta: Mapping[str, Any]) -> Geometry:
    """The layout of the decoded array: the decoder may have changed colour space and planes.

    JPEG 2000 undoes its colour transform (YBR_RCT/ICT -> RGB); decoders upsample YBR_FULL_422
    chroma, so the array is full-resolution YBR_FULL (PS3.3 C.7.6.3.1.2).
    """
    g = Geometry.of(dataset)
    photometric = str(meta.get("photometric_interpretation", g.photometric))
    if photometric == Photometric.YBR_FULL_422:
        photometric = Photometric.YBR_FULL.value
    return Geometry(
        rows=g.rows,
        columns=g.columns,
        frames=g.frames,
        samples=g.samples,
        bits_allocated=g.bits_allocated,
        bits_stored=int(meta.get("bits_stored", g.bits_stored)),
        signed=int(meta.get("pixel_representation", int(g.signed))) == 1,
        photometric=photometric,
        planar=0,  # pydicom returns pixel-interleaved arrays
    )


def as_frames(array: np.ndarray, g: Geometry) -> np.ndarray:
    """A (frames, rows, columns, samples) view of a decoded array (no copy)."""
    view = array.reshape(g.frames, g.rows, g.columns, g.samples)
    if not np.shares_memory(view, array):
        raise PixelError("decoded array is not contiguous")
    return view


def store_native(dataset: Dataset, array: np.ndarray, g: Geometry) -> None:
    """Store the array as Explicit VR Little Endian native Pixel Data (PS3.5 8.1.1, A.2)."""
    if g.bits_allocated == 1:
        data = pack_bits(array)
    else:
        dtype = np.dtype(f"<{'i' if array.dtype.kind == 'i' else 'u'}{g.bits_allocated // 8}")
        data = array.astype(dtype, copy=False).tobytes()
    if len(data) % 2:
        data += b"\x00"  # PS3.5 7.1.1: values have even length
    _set_image_attributes(dataset, g)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in dataset:
            del dataset[keyword]
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.PixelData = data
    element = dataset["PixelData"]
    element.VR = "OW" if g.bits_allocated > 8 else "OB"
    element.is_undefined_length = False


def store_encapsulated(
    dataset: Dataset,
    array: np.ndarray,
    g: Geometry,
    syntax: UID,
    options: Mapping[str, Any],
    preferred_plugin: str = "",
) -> None:
    """Re-encode with pydicom's encoder; never generate a new SOP Instance UID.

    RGB into JPEG 2000 Lossless is labelled YBR_RCT first, so the encoder applies the reversible
    colour transform the label promises (PS3.5 8.2.4; IODs such as US accept only YBR_RCT there).
    """
    if syntax == JPEG2000Lossless and g.samples == 3 and g.photometric == Photometric.RGB:
        g = dataclasses.replace(g, photometric=Photometric.YBR_RCT.value)
    _set_image_attributes(dataset, g)
    size = array.nbytes
    plugins = (preferred_plugin, "") if preferred_plugin else ("",)
    error: Exception | None = None
    for plugin in plugins:  # "" lets pydicom try every available plugin
        try:
            dataset.compress(syntax, array, encoding_plugin=plugin, generate_instance_uid=False, **options)
            break
        except Exception as exc:
            error = exc
    else:
        raise PixelError(f"cannot re-encode Pixel Data ({type(error).__name__})") from None
    if syntax in LOSSY_METHOD and options:
        _record_lossy_step(dataset, syntax, size)


def _set_image_attributes(dataset: Dataset, g: Geometry) -> None:
    dataset.PhotometricInterpretation = g.photometric
    dataset.BitsStored = g.bits_stored
    dataset.HighBit = g.bits_stored - 1
    dataset.PixelRepresentation = 1 if g.signed else 0
    if g.samples > 1:
        dataset.PlanarConfiguration = g.planar


def _record_lossy_step(dataset: Dataset, syntax: UID, uncompressed: int) -> None:
    """Append this lossy step to the history (PS3.3 C.7.6.1.1.5: one value per step)."""
    compressed = len(dataset.PixelData)
    methods = _values(dataset, "LossyImageCompressionMethod")
    ratios = _values(dataset, "LossyImageCompressionRatio")
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionMethod = [*methods, LOSSY_METHOD[syntax]]
    dataset.LossyImageCompressionRatio = [*ratios, f"{uncompressed / max(compressed, 1):.2f}"]


def _values(dataset: Dataset, keyword: str) -> list[Any]:
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    return list(value)
