"""Which frames of an object a detector searches (PS3.3 C.7.6.6 Multi-frame Module).

Up to `ALL_FRAMES_UP_TO` frames: every frame. Longer objects (ultrasound cine, XA runs) nearly
always show their annotation static across frames, so a sample is searched first (the first
frame and two evenly spaced ones) and the union of its boxes is a candidate mask for every
frame. The guarantee: the candidate is used only if the last frame, searched too, shows no
text outside it; otherwise every frame is searched. Text that appears in the middle of a run
and only there (not in the sample, not in the last frame) is the documented limit.
"""

from __future__ import annotations

import numpy as np

from dicom_proxy.deidentify.pixels.detect import FoundBox, Hints, TextDetector
from dicom_proxy.deidentify.pixels.detect.normalise import to_8bit
from dicom_proxy.deidentify.pixels.rules import Box

ALL_FRAMES_UP_TO = 8


def search(detector: TextDetector, grey: np.ndarray, monochrome1: bool, hints: Hints) -> tuple[FoundBox, ...]:
    """Boxes `detector` finds in a (frames, rows, columns) array; see the module docstring."""
    count = grey.shape[0]
    if count <= ALL_FRAMES_UP_TO:
        return _detect_in(detector, grey, range(count), monochrome1, hints)
    sample = sorted({0, count // 3, 2 * count // 3})
    found = _detect_in(detector, grey, sample, monochrome1, hints)
    last = _detect_in(detector, grey, [count - 1], monochrome1, hints)
    if all(_covered(b.box, found) for b in last):
        return _unique(found + last)
    return _detect_in(detector, grey, range(count), monochrome1, hints)


def _detect_in(
    detector: TextDetector, grey: np.ndarray, indices: range | list[int], monochrome1: bool, hints: Hints
) -> tuple[FoundBox, ...]:
    found: list[FoundBox] = []
    for index in indices:
        found.extend(detector.detect(to_8bit(grey[index], monochrome1), hints))
    return _unique(tuple(found))


def _covered(box: Box, found: tuple[FoundBox, ...]) -> bool:
    """Whether the boxes of `found` cover `box` entirely (checked on a small bitmap)."""
    mask = np.zeros((box.bottom - box.top, box.right - box.left), dtype=bool)
    for other in found:
        b = other.box
        top, bottom = max(b.top, box.top), min(b.bottom, box.bottom)
        left, right = max(b.left, box.left), min(b.right, box.right)
        if top < bottom and left < right:
            mask[top - box.top : bottom - box.top, left - box.left : right - box.left] = True
    return bool(mask.all())


def _unique(found: tuple[FoundBox, ...]) -> tuple[FoundBox, ...]:
    best: dict[Box, FoundBox] = {}
    for f in found:
        if f.box not in best or best[f.box].score < f.score:
            best[f.box] = f
    return tuple(best.values())
