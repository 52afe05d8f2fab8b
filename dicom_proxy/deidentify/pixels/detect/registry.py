"""Detector name (``[deidentify.pixels] detector``) -> a `TextDetector` instance."""

from __future__ import annotations

from dicom_proxy.config import ConfigError
from dicom_proxy.deidentify.pixels.detect import TextDetector
from dicom_proxy.deidentify.pixels.detect.strokes import StrokeDetector

DETECTORS = ("opencv", "ppocr")


def make_detector(name: str, mask_text: str = "all") -> TextDetector:
    """Build the configured detector once; ConfigError if its optional package is missing."""
    if name == "opencv":
        if mask_text != "all":
            raise ConfigError(['deidentify.pixels.mask_text: "identifying" needs a detector that reads text (ppocr)'])
        return StrokeDetector()
    if name == "ppocr":
        from dicom_proxy.deidentify.pixels.detect import neural

        return neural.load(identifying_only=mask_text == "identifying")
    raise ConfigError([f"deidentify.pixels.detector: unknown detector {name!r}; known: {', '.join(DETECTORS)}"])
