"""`dicom-proxy preview`: what the pixel stage would mask, drawn on the image (PS3.15 E.3.1).

For a rule author: the image (windowed, one frame) with every box the rules and detectors would
fill outlined and labelled by its source, and the refusal reason when the whole engine would
refuse the object. `--all DIR` draws a contact sheet of a folder, one cell per object, so a
site can check every screen layout of a device at once.

The preview shows the *original* pixels (that is the point): it is as sensitive as its input.
Inputs are referred to by position, never by file name (names often carry names and MRNs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array

from dicom_proxy.deidentify import Engine
from dicom_proxy.deidentify.pixels import PixelCleaner
from dicom_proxy.deidentify.pixels.rules import Box
from dicom_proxy.models import Refused

# Outline colours, given to sources in the order they first appear (colour-blind safe first).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 114, 255),
    (255, 176, 0),
    (0, 200, 80),
    (220, 0, 220),
    (0, 220, 220),
)
REFUSAL_BACKGROUND = (150, 0, 0)
CELL = 256  # contact sheet cell (square), pixels
CAPTION = 40  # contact sheet caption height under each cell


@dataclass(frozen=True)
class SourcedBox:
    """A box one source (``rule:<name>`` or a detector's name) would fill."""

    box: Box
    source: str


@dataclass(frozen=True)
class Verdict:
    """What the engine would do with one object."""

    boxes: tuple[SourcedBox, ...]
    refusal: str | None  # "0xC003: reason" when the object would be refused


def pixel_boxes(cleaner: PixelCleaner, dataset: Dataset) -> tuple[SourcedBox, ...]:
    """Every box the pixel stage would fill, by source (``rule:<name>`` or a detector's name),
    without changing `dataset`: the pixel stage's own preview (rules and detectors)."""
    return tuple(SourcedBox(found.box, found.source) for found in cleaner.preview(dataset).boxes)


def judge(engine: Engine, path: Path) -> Verdict:
    """Run the pixel sources on the header and the whole engine on a copy of the object."""
    dataset = dcmread(path, force=True)
    boxes = pixel_boxes(engine.pixel_cleaner, dataset)
    try:
        engine.deidentify_file(path)
    except Refused as exc:
        return Verdict(boxes, f"0x{int(exc.status):04X}: {exc.reason}")
    return Verdict(boxes, None)


def frame_image(path: Path, dataset: Dataset, frame: int) -> Image.Image:
    """One frame as 8-bit RGB: Modality LUT then VOI LUT/window (PS3.3 C.11), min-max when the
    object has no window; MONOCHROME1 inverted; palette colour expanded (PS3.3 C.7.6.3.1.5)."""
    frames = int(dataset.get("NumberOfFrames") or 1)
    if not 1 <= frame <= frames:
        raise ValueError(f"frame {frame} does not exist (the object has {frames})")
    array = pixel_array(path, index=frame - 1 if frames > 1 else None)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, dataset)
        return Image.fromarray(_to_8bit(array.astype(np.float64), 0.0, float(array.max() or 1)), "RGB")
    if array.ndim == 3:  # colour: pydicom returns RGB
        high = float((1 << int(dataset.get("BitsStored") or 8)) - 1)
        return Image.fromarray(_to_8bit(array.astype(np.float64), 0.0, high), "RGB")
    values = apply_modality_lut(array, dataset).astype(np.float64)
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        values = apply_voi_lut(values, dataset, index=0).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    grey = _to_8bit(values, low, high)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, "L").convert("RGB")


def _to_8bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low if high > low else 1.0
    return np.clip((values - low) * (255.0 / span), 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 8))


def draw_verdict(image: Image.Image, verdict: Verdict) -> Image.Image:
    """Outline and label every box; a banner with the refusal reason at the bottom."""
    draw = ImageDraw.Draw(image)
    size = max(10, min(image.size) // 40)
    font = _font(size)
    width = max(2, min(image.size) // 200)
    colours: dict[str, tuple[int, int, int]] = {}
    for item in verdict.boxes:
        colour = colours.setdefault(item.source, PALETTE[len(colours) % len(PALETTE)])
        b = item.box
        draw.rectangle((b.left, b.top, b.right - 1, b.bottom - 1), outline=colour, width=width)
    for item in verdict.boxes:
        b = item.box
        left, top, right, bottom = draw.textbbox((0, 0), item.source, font=font)
        label_height = bottom - top + 4
        # Above the box when there is room, otherwise just inside its top edge.
        y = b.top - label_height if b.top >= label_height else b.top + width
        draw.rectangle((b.left, y, b.left + right - left + 4, y + label_height), fill=colours[item.source])
        draw.text((b.left + 2 - left, y + 2 - top), item.source, fill=(0, 0, 0), font=font)
    if verdict.refusal:
        text = f"REFUSED {verdict.refusal}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        band = bottom - top + 8
        draw.rectangle((0, image.height - band, image.width, image.height), fill=REFUSAL_BACKGROUND)
        draw.text((4 - left, image.height - band + 4 - top), text, fill=(255, 255, 255), font=font)
    return image


def preview_image(engine: Engine, path: Path, frame: int = 1) -> tuple[Image.Image, Verdict]:
    """The preview of one object at its own size (Columns x Rows)."""
    dataset = dcmread(path, force=True)
    verdict = judge(engine, path)
    return draw_verdict(frame_image(path, dataset, frame), verdict), verdict


def contact_sheet(engine: Engine, paths: Sequence[Path]) -> tuple[Image.Image, list[str]]:
    """One cell per object (scaled to fit CELL x CELL, boxes drawn at full size first), captioned
    with its position and verdict; returns the sheet and one summary line per object."""
    columns = max(1, min(len(paths), 6))
    rows = math.ceil(len(paths) / columns)
    sheet = Image.new("RGB", (columns * CELL, rows * (CELL + CAPTION)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    lines = []
    for number, path in enumerate(paths, 1):
        x, y = ((number - 1) % columns) * CELL, ((number - 1) // columns) * (CELL + CAPTION)
        try:
            image, verdict = preview_image(engine, path)
            summary = _summary(verdict)
            image = ImageOps.contain(image, (CELL, CELL))
            sheet.paste(image, (x + (CELL - image.width) // 2, y + (CELL - image.height) // 2))
        except Exception as exc:
            summary = f"cannot preview ({type(exc).__name__})"
        lines.append(f"#{number}: {summary}")
        draw.text((x + 4, y + CELL + 4), f"#{number}", fill=(255, 255, 255), font=font)
        draw.text((x + 4, y + CELL + 20), summary[:40], fill=(220, 220, 220), font=font)
    return sheet, lines


def _summary(verdict: Verdict) -> str:
    if verdict.refusal:
        return f"refused {verdict.refusal}"
    if verdict.boxes:
        sources = sorted({b.source for b in verdict.boxes})
        return f"{len(verdict.boxes)} box(es): {', '.join(sources)}"
    return "no mask"
