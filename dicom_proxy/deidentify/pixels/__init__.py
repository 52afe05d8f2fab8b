"""Clean Pixel Data (PS3.15 E.3.1): mask burned-in text by rule, fail closed.

PROVISIONAL interface (the full stage is issue #4). The engine calls
`PixelCleaner.clean(dataset)` after planning and before tag actions, so rules match on the
original header.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_proxy.config import PixelConfig


@dataclass(frozen=True)
class PixelOutcome:
    """What the pixel stage did. `cleaned`: a rule masked the pixels (add code 113101)."""

    cleaned: bool = False
    pixels_removed: bool = False


class PixelCleaner:
    def __init__(self, config: PixelConfig) -> None:
        self.config = config

    def clean(self, dataset: Dataset) -> PixelOutcome:
        """Mask `dataset`'s pixels in place when a rule applies; raise Refused when unsafe."""
        return PixelOutcome()
