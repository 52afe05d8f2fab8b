"""Burned-in text found by looking (PS3.15 E.3.1 Clean Pixel Data, "Clean Pixel Data Option").

Every source of boxes answers the same question for one decoded object: where is text? Site
rules (``pixels/rules.py``) answer from the header; a `TextDetector` answers from the pixels.
This package holds the detector side:

- `TextDetector`: the protocol (a name and ``detect(frame, hints) -> boxes``) every detector
  implements; a detector sees one 8-bit grey frame at a time.
- ``normalise.py``: any Photometric Interpretation and bit depth -> 8-bit grey frames.
- ``frames.py``: which frames of a multi-frame object are searched (all, or a verified sample).
- ``strokes.py``: the default detector (OpenCV): stroke-like components joined into lines.
- ``neural.py``: the optional PP-OCR detector (extra ``dicom-proxy[ocr]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dicom_proxy.deidentify.pixels.rules import Box

__all__ = ["FoundBox", "Hints", "TextDetector"]


@dataclass(frozen=True)
class FoundBox:
    """A box one source wants masked: `source` names it (``rule:<name>`` or a detector's
    name), `score` is its confidence from 0 to 1 (rules: 1). Coordinates only: no content."""

    box: Box
    source: str
    score: float = 1.0


@dataclass(frozen=True)
class Hints:
    """What a detector that reads text may compare it with: identifying strings of the
    original header (names, IDs, dates), upper-cased. Never logged, never stored."""

    identifying: tuple[str, ...] = ()


class TextDetector(Protocol):
    """Finds text lines in one frame. Implementations are immutable and thread-safe."""

    @property
    def name(self) -> str:
        """A short name for audit records and previews (``opencv``, ``ppocr``)."""
        ...

    def detect(self, frame: np.ndarray, hints: Hints) -> tuple[FoundBox, ...]:
        """Boxes of text lines in `frame`, a (rows, columns) uint8 array in which larger
        values are brighter (normalised by ``normalise.to_8bit``)."""
        ...
