"""Which objects are assumed to carry burned-in text (PS3.15 E.3.1; PS3.3 C.7.6.1.1.2, C.8.6.1).

The check decides where an object is refused when no source of boxes can look at its pixels
(detection off, a syntax without decoder, a decode failure). It must not be fooled by spelling:
codes are compared upper-cased with everything but letters and digits removed, so
``SCREEN SAVE``, ``screen_save`` and ``SCREENSAVE`` are the same term, and a listed SOP Class
UID covers its sub-classes (``...1.1.7`` covers the multi-frame SC classes ``...1.1.7.1-4``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum

from pydicom.dataset import Dataset


class Risk(Enum):
    """Why an object is assumed to carry burned-in text (PS3.15 E.3.1)."""

    BURNED_IN_ANNOTATION = "Burned In Annotation (0028,0301) is YES"
    HIGH_RISK_MODALITY = "Modality (0008,0060) is listed as high risk"
    HIGH_RISK_SOP_CLASS = "SOP Class UID (0008,0016) is listed as high risk"
    HIGH_RISK_IMAGE_TYPE = "Image Type (0008,0008) names a screen save, label or overview"
    CONVERTED = "Conversion Type (0008,0064) is present: a captured or scanned image"


# Image Type values that describe captured screens or slide labels (PS3.3 C.8.12.4.1.1 for
# LABEL/OVERVIEW of whole-slide images; SCREEN SAVE is a vendor term in wide use), normalised.
_HIGH_RISK_IMAGE_TYPES = frozenset({"SCREENSAVE", "SCREENSHOT", "SCREENCAPTURE", "LABEL", "OVERVIEW"})


def normalised(value: object) -> str:
    """Upper case, letters and digits only: the form every code is compared in."""
    return re.sub(r"[^A-Z0-9]", "", str(value).upper())


class RiskCheck:
    """Built once from the configured lists; immutable."""

    def __init__(self, modalities: Iterable[str], sop_classes: Iterable[str]) -> None:
        self._modalities = frozenset(normalised(m) for m in modalities) - {""}
        self._sop_classes = tuple(u.strip().rstrip(".") for u in sop_classes if u.strip())

    def __call__(self, dataset: Dataset) -> Risk | None:
        """The first reason to assume burned-in text, or None."""
        if normalised(_text(dataset, "BurnedInAnnotation")) == "YES":
            return Risk.BURNED_IN_ANNOTATION
        if normalised(_text(dataset, "Modality")) in self._modalities:
            return Risk.HIGH_RISK_MODALITY
        sop_class = _text(dataset, "SOPClassUID").strip().rstrip("\x00 ")
        if any(sop_class == u or sop_class.startswith(u + ".") for u in self._sop_classes):
            return Risk.HIGH_RISK_SOP_CLASS
        if any(normalised(v) in _HIGH_RISK_IMAGE_TYPES for v in _values(dataset, "ImageType")):
            return Risk.HIGH_RISK_IMAGE_TYPE
        if normalised(_text(dataset, "ConversionType")):
            return Risk.CONVERTED
        return None


def _text(dataset: Dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception:
        return ""  # an unreadable value is no evidence either way
    return "" if value is None else str(value)


def _values(dataset: Dataset, keyword: str) -> list[str]:
    try:
        value = dataset.get(keyword)
    except Exception:
        return []
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [part for part in re.split(r"\\", str(value))]
    return [str(v) for v in value]
