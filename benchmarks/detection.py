"""Benchmark the burned-in text detector (issue 10): milliseconds per 512x512 16-bit frame.

The frames are the synthetic CT/MR/CR/MG corpus of ``tests/burnedin.py`` (text drawn in, 16
bits, MONOCHROME2), so the figure includes what the pixel stage does per frame besides decoding:
normalising to 8 bits and the detector itself. Not a test: never assert on timings.
Usage: python -m benchmarks.detection [--frames N] [--detector opencv|ppocr]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectionResult:
    label: str
    median_ms: float
    p95_ms: float
    frames: int


def detection_per_frame(frames: int = 60, detector: str = "opencv", size: int = 512) -> DetectionResult:
    """Normalise + detect, per frame, on `frames` synthetic 16-bit frames with text."""
    from dicom_proxy.deidentify.pixels.detect import Hints
    from dicom_proxy.deidentify.pixels.detect.normalise import to_8bit
    from dicom_proxy.deidentify.pixels.detect.registry import make_detector
    from tests.burnedin import KINDS, background, clutter, draw_text, fonts

    rng = np.random.default_rng(14)
    font_files = fonts()
    images = []
    for i in range(frames):
        image = background(KINDS[i % 4], rng, (size, size))  # CT, MR, CR, MG: 16-bit modalities
        clutter(rng, image)
        draw_text(rng, image, font_files, True, np.zeros((size, size), dtype=bool))
        images.append(np.rint(image * 65535).astype(np.uint16))
    found = make_detector(detector)
    hints = Hints()
    times = []
    for image in images:
        start = time.perf_counter()
        found.detect(to_8bit(image), hints)
        times.append((time.perf_counter() - start) * 1000)
    return DetectionResult(
        f"text detection ({detector}), {size}x{size} 16-bit frame",
        statistics.median(times),
        float(np.percentile(times, 95)),
        frames,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--detector", default="opencv", choices=("opencv", "ppocr"))
    args = parser.parse_args()
    result = detection_per_frame(args.frames, args.detector)
    print(f"{result.label}: median {result.median_ms:.1f} ms, p95 {result.p95_ms:.1f} ms ({result.frames} frames)")


if __name__ == "__main__":
    main()
