"""Synthetic burned-in text on real-looking images, with ground truth, and a scorer.

`corpus(seed, count)` yields `Case`s: a DICOM data set (native Explicit VR Little Endian) and
the exact text lines drawn into it. Backgrounds imitate CT, MR, CR/DX, MG and US (speckle,
anatomy edges, collimation, fan-shaped sectors); text is rendered with Pillow in the TrueType
fonts Debian ships (DejaVu, Liberation), 4-20 px, white or black, on flat background or over
texture, in corners, along edges and mid-image, one to four lines; every Photometric
Interpretation, 8-16 bits, single and multi-frame. About one case in five has no text but
rulers, lead markers and strong edges, to measure false masking.

`score(cases, boxes_of)` computes the figures of issue 10: share of text lines masked (every
ink pixel of the line inside a box), share of images with every line masked, share of
non-text pixels left untouched, and milliseconds per image.

Run ``python -m tests.burnedin --count 500`` for the report.
"""

from __future__ import annotations

import argparse
import statistics
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_proxy.deidentify.pixels.rules import Box

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONT_NAMES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansCondensed.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSans-Bold.ttf",
    "LiberationMono-Regular.ttf",
    "LiberationSerif-Regular.ttf",
)
KINDS = ("CT", "MR", "CR", "MG", "US")
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1", "RGB", "YBR_FULL", "PALETTE COLOR")


def fonts() -> list[Path]:
    """Every font of FONT_NAMES; all must exist, so a seed gives the same corpus everywhere."""
    found = [d / n for n in FONT_NAMES for d in FONT_DIRS if (d / n).exists()]
    if len(found) != len(FONT_NAMES):
        raise RuntimeError("fonts missing: install Debian fonts-dejavu-core and fonts-liberation")
    return found


@dataclass(frozen=True)
class Line:
    """One rendered text line: its ink bounding box and the ink pixels (alpha >= 0.5)."""

    box: Box
    ink: np.ndarray  # (rows, columns) bool over the whole image


@dataclass(frozen=True)
class Case:
    name: str
    dataset: Dataset
    lines: tuple[Line, ...]


# -- backgrounds: float32 in [0, 1], (rows, columns) ---------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
    return blurred / (np.abs(blurred).max() + 1e-6)


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def background(kind: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    rows, columns = shape
    image = np.zeros(shape, dtype=np.float32)
    if kind == "CT":
        body = _ellipse(shape, rows / 2, columns / 2, rows * rng.uniform(0.3, 0.42), columns * rng.uniform(0.33, 0.45))
        image[body] = 0.35
        image += body * 0.06 * _smooth_noise(rng, shape, 3)
        for _ in range(rng.integers(2, 6)):  # bones: bright rings and blobs
            cy, cx = rows / 2 + rng.uniform(-0.2, 0.2) * rows, columns / 2 + rng.uniform(-0.25, 0.25) * columns
            ry, rx = rng.uniform(0.03, 0.09) * rows, rng.uniform(0.03, 0.09) * columns
            ring = _ellipse(shape, cy, cx, ry, rx) & ~_ellipse(shape, cy, cx, ry * 0.7, rx * 0.7)
            image[ring & body] = rng.uniform(0.7, 0.95)
        lungs = _ellipse(shape, rows * 0.45, columns * 0.35, rows * 0.15, columns * 0.08)
        image[lungs & body] = 0.05
        image += 0.02 * rng.standard_normal(shape).astype(np.float32)
    elif kind == "MR":
        head = _ellipse(shape, rows / 2, columns / 2, rows * rng.uniform(0.35, 0.45), columns * rng.uniform(0.3, 0.4))
        tissue = 0.45 + 0.25 * _smooth_noise(rng, shape, rng.uniform(4, 10))
        image = np.where(head, tissue, 0.02).astype(np.float32)
        skull = head & ~_ellipse(shape, rows / 2, columns / 2, rows * 0.32, columns * 0.27)
        image[skull] *= 0.3
        image += 0.03 * np.abs(rng.standard_normal(shape)).astype(np.float32)
    elif kind == "CR":
        image = 0.25 + 0.2 * _smooth_noise(rng, shape, rows / 8)
        for _ in range(rng.integers(1, 4)):  # long bones with sharp cortical edges
            cx = rng.uniform(0.2, 0.8) * columns
            width = rng.uniform(0.05, 0.12) * columns
            x = np.arange(columns)
            profile = np.clip(1 - np.abs(x - cx) / width, 0, 1) ** 0.3
            image += 0.45 * profile[None, :].astype(np.float32)
        if rng.random() < 0.5:  # collimation: hard edges to a bright border
            top = int(rng.uniform(0.02, 0.1) * rows)
            image[:top, :] = 0.95
        image += 0.02 * rng.standard_normal(shape).astype(np.float32)
    elif kind == "MG":
        breast = _ellipse(shape, rows / 2, 0, rows * 0.45, columns * rng.uniform(0.55, 0.8))
        texture = 0.5 + 0.2 * _smooth_noise(rng, shape, 2) + 0.15 * _smooth_noise(rng, shape, 12)
        image = np.where(breast, texture, 0.0).astype(np.float32)
        image += 0.01 * rng.standard_normal(shape).astype(np.float32)
    else:  # US: a fan of speckle on black
        y, x = np.mgrid[:rows, :columns].astype(np.float32)
        apex_y, apex_x = -rows * 0.1, columns / 2
        angle = np.arctan2(x - apex_x, y - apex_y)
        radius = np.hypot(x - apex_x, y - apex_y)
        fan = (np.abs(angle) < 0.6) & (radius > rows * 0.15) & (radius < rows * 1.0)
        speckle = rng.rayleigh(0.25, shape).astype(np.float32)
        speckle = cv2.GaussianBlur(speckle, (0, 0), 0.8)
        tissue = 0.4 + 0.3 * _smooth_noise(rng, shape, 6)
        # log-compressed echoes: bright speckle approaches but rarely reaches the top of the range
        image = np.where(fan, 0.9 * np.tanh(speckle * tissue * 1.6), 0.0).astype(np.float32)
    return np.clip(image, 0, 1)


def clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Things that are not text: rulers with ticks, lead markers (solid dots), edges."""
    rows, columns = image.shape
    if rng.random() < 0.6:  # a vertical ruler with ticks, as on US and XA screens
        x = int(rng.uniform(0.85, 0.95) * columns)
        image[int(rows * 0.15) : int(rows * 0.85), x] = 1.0
        for y in range(int(rows * 0.15), int(rows * 0.85), max(4, rows // 32)):
            image[y, x - 3 : x + 1] = 1.0
    for _ in range(rng.integers(0, 4)):  # lead markers and clips: solid bright dots
        cy, cx, r = rng.uniform(0.1, 0.9) * rows, rng.uniform(0.1, 0.9) * columns, rng.uniform(2, 6)
        image[_ellipse(image.shape, cy, cx, r, r)] = 1.0
    if rng.random() < 0.5:  # a straight edge (table, collimator)
        y = int(rng.uniform(0.6, 0.95) * rows)
        image[y : y + 2, :] = rng.uniform(0.7, 1.0)


# -- text ------------------------------------------------------------------------------------------

_WORDS = (
    "DOE^JANE",
    "SMITH JOHN",
    "MRN",
    "ID:",
    "DOB",
    "ACC#",
    "St. Mary",
    "Hospital",
    "kV",
    "mAs",
    "SERIES",
    "IMG",
    "L",
    "R",
    "W:400",
    "C:40",
    "AX T2",
    "Ex:",
    "Se:",
    "Im:",
)


def _text(rng: np.random.Generator) -> str:
    pieces = []
    for _ in range(rng.integers(1, 4)):
        choice = rng.random()
        if choice < 0.35:
            pieces.append(str(rng.choice(_WORDS)))
        elif choice < 0.6:
            pieces.append("".join(rng.choice(list(string.digits), size=rng.integers(4, 9))))
        elif choice < 0.8:
            pieces.append(f"{rng.integers(1950, 2025)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}")
        else:
            pieces.append("".join(rng.choice(list(string.ascii_uppercase), size=rng.integers(3, 9))))
    return " ".join(pieces)


def draw_text(
    rng: np.random.Generator, image: np.ndarray, font_files: list[Path], white: bool, taken: np.ndarray
) -> tuple[Line, ...]:
    """Render 1-4 lines into `image` (in place) where `taken` is False; return each line's ink.

    Font sizes 5-20 give glyphs 4-20 px tall. Text always contrasts with what is under it, as
    on a screen: white text over something bright gets a dark plate, black text a bright one.
    """
    rows, columns = image.shape
    size = int(rng.integers(5, 21))
    font = ImageFont.truetype(str(font_files[rng.integers(len(font_files))]), size)
    texts = [_text(rng) for _ in range(rng.integers(1, 5))]
    spacing = max(1, size // 4)
    heights = [font.getbbox(t)[3] - min(0, font.getbbox(t)[1]) for t in texts]
    widths = [font.getbbox(t)[2] for t in texts]
    block_h = sum(heights) + spacing * (len(texts) - 1)
    block_w = max(widths)
    if block_w >= columns - 8 or block_h >= rows - 8:
        return ()
    for _ in range(10):
        place = rng.choice(["corner", "edge", "middle"])
        if place == "corner":
            x = 3 if rng.random() < 0.5 else columns - block_w - 3
            y = 3 if rng.random() < 0.5 else rows - block_h - 3
        elif place == "edge":
            x = int(rng.integers(3, columns - block_w - 2))
            y = 3 if rng.random() < 0.5 else rows - block_h - 3
        else:
            x = int(rng.integers(3, columns - block_w - 2))
            y = int(rng.integers(3, rows - block_h - 2))
        area = (slice(max(y - 3, 0), y + block_h + 3), slice(max(x - 3, 0), x + block_w + 3))
        if not taken[area].any():
            break
    else:
        return ()
    taken[area] = True
    under = float(image[area].mean())
    if not white:
        image[area] = rng.uniform(0.75, 1.0)
    elif under > 0.5:
        image[area] = rng.uniform(0.0, 0.2)
    value = 1.0 if white else 0.0
    lines = []
    for text, height in zip(texts, heights, strict=True):
        layer = Image.new("L", (columns, rows), 0)
        ImageDraw.Draw(layer).text((x, y), text, fill=255, font=font)
        alpha = np.asarray(layer, dtype=np.float32) / 255.0
        image[...] = image * (1 - alpha) + value * alpha
        ink = alpha >= 0.5
        if ink.any():
            ys, xs = np.nonzero(ink)
            box = Box(top=int(ys.min()), left=int(xs.min()), bottom=int(ys.max()) + 1, right=int(xs.max()) + 1)
            lines.append(Line(box, ink))
        y += height + spacing
    return tuple(lines)


# -- DICOM -----------------------------------------------------------------------------------------


def dataset(
    image: np.ndarray, photometric: str, bits: int, signed: bool, frames: list[np.ndarray] | None = None
) -> Dataset:
    """Native Explicit VR Little Endian data set of `image` (values in [0, 1], 1 = bright)."""
    stack = frames if frames is not None else [image]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "2.25.1"
    ds.Modality = "OT"
    rows, columns = image.shape
    ds.Rows, ds.Columns = rows, columns
    ds.PhotometricInterpretation = photometric
    if len(stack) > 1:
        ds.NumberOfFrames = len(stack)
    if photometric in ("RGB", "YBR_FULL"):
        bits, signed = 8, False
    allocated = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL") else 1
    high = (1 << bits) - 1
    cells = []
    for frame in stack:
        values = np.rint(np.clip(frame, 0, 1) * high).astype(np.int64)
        if photometric == "MONOCHROME1":
            values = high - values
        if signed:
            values -= 1 << (bits - 1)
        if photometric == "RGB":
            tint = np.asarray((1.0, 0.95, 0.85))
            values = np.rint(values[..., None] * tint).astype(np.int64)
        elif photometric == "YBR_FULL":
            values = np.stack([values, np.full_like(values, 128), np.full_like(values, 128)], axis=-1)
        cells.append(values)
    array = np.stack(cells).astype(f"<{'i' if signed else 'u'}{allocated // 8}")
    if photometric == "PALETTE COLOR":
        ramp = np.linspace(0, 65535, 256).astype("<u2")
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", ramp.tobytes())
    ds.PixelData = array.tobytes()
    ds["PixelData"].VR = "OW" if allocated > 8 else "OB"
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    return ds


def corpus(seed: int, count: int, no_text_share: float = 0.2) -> Iterator[Case]:
    """`count` cases, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    font_files = fonts()
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        photometric = (
            str(rng.choice(PHOTOMETRICS)) if kind != "US" else str(rng.choice(["RGB", "YBR_FULL", "MONOCHROME2"]))
        )
        if photometric == "PALETTE COLOR":
            bits, signed = 8, False
        else:
            bits = int(rng.choice([8, 10, 12, 16]))
            signed = bits > 8 and photometric.startswith("MONO") and rng.random() < 0.3
        size = int(rng.choice([256, 512, 512, 512, 640]))
        shape = (size, size) if kind != "US" else (int(size * 0.75), size)
        image = background(kind, rng, shape)
        clutter(rng, image)
        lines: tuple[Line, ...] = ()
        has_text = rng.random() >= no_text_share
        if has_text:
            taken = np.zeros(shape, dtype=bool)
            for _ in range(rng.integers(1, 4)):
                lines += draw_text(rng, image, font_files, rng.random() < 0.7, taken)
        frames = None
        if kind == "US" and rng.random() < 0.4:  # cine: new speckle every frame, text static
            frames = []
            text_mask = np.zeros(shape, dtype=bool)
            for line in lines:
                text_mask |= line.ink
            for _ in range(int(rng.integers(9, 16))):
                moving = background(kind, rng, shape)
                frames.append(np.where(_dilated(text_mask), image, moving))
        yield Case(
            f"{i:04d}-{kind}-{photometric.replace(' ', '_')}-{bits}{'s' if signed else ''}",
            dataset(image, photometric, bits, signed, frames),
            lines,
        )


def _dilated(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)


# -- scoring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    images: int
    lines: int
    lines_masked: float
    images_fully_masked: float
    untouched: float
    ms_median: float
    ms_p95: float

    def report(self) -> str:
        return (
            f"images {self.images} (with text lines: {self.lines})\n"
            f"text lines masked:            {self.lines_masked:.1%}\n"
            f"images with every line masked: {self.images_fully_masked:.1%}\n"
            f"non-text pixels untouched:    {self.untouched:.1%}\n"
            f"ms per image: median {self.ms_median:.1f}, p95 {self.ms_p95:.1f}"
        )


def score(cases: list[Case], boxes_of: Callable[[Dataset], tuple[Box, ...]]) -> Score:
    lines = masked_lines = full_images = text_images = 0
    outside = outside_kept = 0
    times: list[float] = []
    for case in cases:
        start = time.perf_counter()
        boxes = boxes_of(case.dataset)
        times.append((time.perf_counter() - start) * 1000)
        rows, columns = int(case.dataset.Rows), int(case.dataset.Columns)
        mask = np.zeros((rows, columns), dtype=bool)
        for b in boxes:
            mask[b.top : b.bottom, b.left : b.right] = True
        text = np.zeros((rows, columns), dtype=bool)
        all_masked = True
        for line in case.lines:
            lines += 1
            covered = bool(mask[line.ink].all())
            masked_lines += covered
            all_masked &= covered
            b = line.box
            text[max(b.top - 3, 0) : b.bottom + 3, max(b.left - 3, 0) : b.right + 3] = True
        if case.lines:
            text_images += 1
            full_images += all_masked
        outside += int((~text).sum())
        outside_kept += int((~text & ~mask).sum())
    return Score(
        images=len(cases),
        lines=lines,
        lines_masked=masked_lines / max(lines, 1),
        images_fully_masked=full_images / max(text_images, 1),
        untouched=outside_kept / max(outside, 1),
        ms_median=statistics.median(times),
        ms_p95=float(np.percentile(times, 95)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Score a text detector on the synthetic corpus")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--detector", default="opencv", choices=("opencv", "ppocr"))
    parser.add_argument("--save", type=Path, help="write each case as PNG with boxes drawn, here")
    args = parser.parse_args()
    from dicom_proxy.config import PixelConfig
    from dicom_proxy.deidentify.pixels import PixelCleaner

    cleaner = PixelCleaner(PixelConfig(detector=args.detector, max_mask_share=1.0))
    cases = list(corpus(args.seed, args.count))

    def boxes_of(ds: Dataset) -> tuple[Box, ...]:
        return tuple(f.box for f in cleaner.preview(ds).boxes)

    print(score(cases, boxes_of).report())
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for case in cases:
            _save(case, boxes_of(case.dataset), args.save / f"{case.name}.png")


def _save(case: Case, boxes: tuple[Box, ...], path: Path) -> None:
    from dicom_proxy.deidentify.pixels.detect.normalise import to_8bit
    from dicom_proxy.deidentify.pixels.registry import codec_for

    codec = codec_for(case.dataset.file_meta.TransferSyntaxUID)
    assert codec is not None
    grey = codec.decode(case.dataset).grey()[0]
    view = cv2.cvtColor(to_8bit(grey, case.dataset.PhotometricInterpretation == "MONOCHROME1"), cv2.COLOR_GRAY2BGR)
    for line in case.lines:
        b = line.box
        cv2.rectangle(view, (b.left, b.top), (b.right - 1, b.bottom - 1), (0, 200, 0), 1)
    for b in boxes:
        cv2.rectangle(view, (b.left, b.top), (b.right - 1, b.bottom - 1), (0, 0, 255), 1)
    cv2.imwrite(str(path), view)


if __name__ == "__main__":
    main()
