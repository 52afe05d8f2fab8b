"""Benchmark the pixel stage (PS3.15 E.3.1): masking cost per transfer syntax.

Prints one line per case: a 512x512 16-bit CT-like frame and a 100-frame 480x640 RGB
ultrasound cine, in each syntax the stage re-encodes, plus the no-rule path (header only).
The figure is the whole `PixelCleaner.clean` call: decode, fill, re-encode, with text
detection off (the rules alone; detection has rows of its own in scripts/bench). Not a test:
never assert on timings. Usage: scripts/bench --pixels, or python -m benchmarks.pixels [--repeat N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_proxy.config import PixelConfig
from dicom_proxy.deidentify.pixels import PixelCleaner

RULES = """
[[rules]]
name = "header band and side box"
match.Modality = ["CT", "US"]
rectangles = [
  { x = 0.0, y = 0.0, width = 1.0, height = 0.1, units = "fraction" },
  { x = 0.75, y = 0.8, width = 0.25, height = 0.2, units = "fraction" },
]
"""

SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless)


def image(frames: int, rows: int, columns: int, samples: int, bits: int) -> np.ndarray:
    """Smooth anatomy-like gradient plus noise: compresses like real images, unlike noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:rows, 0:columns]
    base = (np.sin(xx / 37.0) + np.cos(yy / 23.0) + 2) / 4 * (2 ** (bits - 2))
    noise = rng.integers(0, 16, size=(frames, rows, columns, samples))
    array = base[None, :, :, None] + noise
    return array.astype(np.uint16 if bits > 8 else np.uint8)


def dataset(array: np.ndarray, modality: str, syntax: UID) -> Dataset:
    frames, rows, columns, samples = array.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1" if modality == "US" else "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3"
    ds.Modality = modality
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = 12 if ds.BitsAllocated == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    squeezed = array[0] if frames == 1 else array
    squeezed = squeezed[..., 0] if samples == 1 else squeezed
    ds.PixelData = squeezed.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, squeezed, generate_instance_uid=False)
    return ds


def measure(cleaner: PixelCleaner, source: Dataset, repeat: int) -> float:
    """Median seconds of `clean` on fresh copies (copying is not timed)."""
    times = []
    for _ in range(repeat):
        ds = copy.deepcopy(source)
        start = time.perf_counter()
        cleaner.clean(ds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_pixels(repeat: int = 5, cine_frames: int = 100) -> list[str]:
    """One line per case; called by scripts/bench."""
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.toml"
        rules.write_text(RULES, encoding="utf-8")
        cleaner = PixelCleaner(PixelConfig(rules_file=rules, detect="off"))
        lines = []
        ct = image(1, 512, 512, 1, 12)
        cine = image(cine_frames, 480, 640, 3, 8)
        for syntax in SYNTAXES:
            seconds = measure(cleaner, dataset(ct, "CT", syntax), repeat)
            lines.append(f"pixels  512x512x16 frame    {syntax.name:<45} {seconds * 1e3:9.2f} ms/frame")
        for syntax in SYNTAXES:
            seconds = measure(cleaner, dataset(cine, "US", syntax), max(1, repeat // 2))
            lines.append(
                f"pixels  US cine {cine_frames}x480x640 RGB {syntax.name:<39} {seconds * 1e3:9.1f} ms/cine"
                f" ({seconds * 1e3 / cine_frames:.2f} ms/frame)"
            )
        jpeg = dcmread(get_testdata_file("examples_ybr_color.dcm"))  # US, JPEG baseline 422
        seconds = measure(cleaner, jpeg, repeat)
        lines.append(
            f"pixels  US cine 30x240x320 JPEG baseline -> Explicit VR LE (example file)"
            f" {seconds * 1e3:9.1f} ms/cine ({seconds * 1e3 / 30:.2f} ms/frame)"
        )
        untouched = dataset(ct, "MR", JPEGLSLossless)
        seconds = measure(cleaner, untouched, repeat * 20)
        lines.append(f"pixels  no rule applies (header only, not decoded)        {seconds * 1e6:9.1f} us/object")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    for line in bench_pixels(args.repeat, args.frames):
        print(line, flush=True)


if __name__ == "__main__":
    main()
