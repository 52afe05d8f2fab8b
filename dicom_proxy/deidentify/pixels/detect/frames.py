"""Which frames of an object a detector searches (PS3.3 C.7.6.6 Multi-frame Module).

Up to `ALL_FRAMES_UP_TO` frames: every frame, every box kept. Longer objects (ultrasound cine,
XA runs) show their annotation static while the image moves, so:

1. A sample is searched: the first frame and two evenly spaced ones.
2. Pixels equal (within 1% of the range) in the sample and the last frame are *static*. A box
   is kept when at least half of its area is static: text and the flat plate it sits on stay,
   moving speckle does not. (Digits that change, such as a frame counter, still sit on a
   static plate and are kept.)
3. Verification: the last frame is searched the same way; if it shows a kept box that the
   sample's boxes do not cover (90% of its area), the annotation changes, and every frame is
   searched, keeping the boxes that are at least half static over all frames (text appearing
   or changing on a static plate stays; moving speckle does not).

The guarantee: every half-static box the detector finds on the sampled and last frames is
masked on every frame, and when the last frame disagrees with the sample, every frame is
searched. The limits: text shown only on frames outside the sample while the last frame agrees
with it, and text drawn over moving anatomy in a cine (not half static), are not masked.
"""

from __future__ import annotations

import numpy as np

from dicom_proxy.deidentify.pixels.detect import FoundBox, Hints, TextDetector
from dicom_proxy.deidentify.pixels.detect.normalise import to_8bit
from dicom_proxy.deidentify.pixels.rules import Box

ALL_FRAMES_UP_TO = 8
STATIC_SHARE = 0.5


def search(detector: TextDetector, grey: np.ndarray, monochrome1: bool, hints: Hints) -> tuple[FoundBox, ...]:
    """Boxes `detector` finds in a (frames, rows, columns) array; see the module docstring."""
    count = grey.shape[0]
    if count <= ALL_FRAMES_UP_TO:
        return _detect_in(detector, grey, range(count), monochrome1, hints)
    sample = sorted({0, count // 3, 2 * count // 3})
    static = _static(grey, [*sample, count - 1])
    found = _kept(_detect_in(detector, grey, sample, monochrome1, hints), static)
    last = _kept(_detect_in(detector, grey, [count - 1], monochrome1, hints), static)
    if all(_covered(b.box, found) for b in last):
        return _unique(found + last)
    everywhere = _static(grey, list(range(count)))
    return _kept(_detect_in(detector, grey, range(count), monochrome1, hints), everywhere)


def _static(grey: np.ndarray, indices: list[int]) -> np.ndarray:
    frames = grey[indices]
    spread = frames.max(axis=0).astype(np.float64) - frames.min(axis=0)
    tolerance = 0.01 * (float(frames.max()) - float(frames.min()))
    static: np.ndarray = spread <= tolerance
    return static


def _kept(found: tuple[FoundBox, ...], static: np.ndarray) -> tuple[FoundBox, ...]:
    return tuple(f for f in found if static[f.box.top : f.box.bottom, f.box.left : f.box.right].mean() >= STATIC_SHARE)


def _detect_in(
    detector: TextDetector, grey: np.ndarray, indices: range | list[int], monochrome1: bool, hints: Hints
) -> tuple[FoundBox, ...]:
    found: list[FoundBox] = []
    for index in indices:
        found.extend(detector.detect(to_8bit(grey[index], monochrome1), hints))
    return _unique(tuple(found))


def _covered(box: Box, found: tuple[FoundBox, ...]) -> bool:
    """Whether the boxes of `found` cover nearly all of `box` (90%: the same line found on
    two frames may differ by a pixel or two at its ends; a new line is not covered at all)."""
    mask = np.zeros((box.bottom - box.top, box.right - box.left), dtype=bool)
    for other in found:
        b = other.box
        top, bottom = max(b.top, box.top), min(b.bottom, box.bottom)
        left, right = max(b.left, box.left), min(b.right, box.right)
        if top < bottom and left < right:
            mask[top - box.top : bottom - box.top, left - box.left : right - box.left] = True
    return bool(mask.mean() >= 0.9)


def _unique(found: tuple[FoundBox, ...]) -> tuple[FoundBox, ...]:
    best: dict[Box, FoundBox] = {}
    for f in found:
        if f.box not in best or best[f.box].score < f.score:
            best[f.box] = f
    return tuple(best.values())
