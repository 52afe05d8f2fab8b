"""Clean Pixel Data (PS3.15 E.3.1): mask burned-in text by rule, fail closed.

The engine calls `PixelCleaner.clean(dataset)` after planning and before tag actions, so rules
match on the original header. Flow for one object:

1. Match the rules (``rules.py``) on the original header; nothing is decoded yet.
2. If rules match: decode -> fill the rectangles in every frame -> re-encode (``registry.py``
   picks the codec family by transfer syntax), set Burned In Annotation (0028,0301) to NO,
   drop the Icon Image Sequence and overlays (PS3.15 Table E.1-1: X unless cleaned).
3. If none match and the object is high risk (Burned In Annotation YES, or a listed modality or
   SOP class): refuse with PIXELS_NOT_CLEANABLE, or, only if the site configured
   ``on_uncleaned = "remove_pixels"``, remove the pixel data.
4. Otherwise leave Pixel Data untouched (still raw bytes: never decoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_proxy.conditions import header_values
from dicom_proxy.config import PixelConfig
from dicom_proxy.deidentify.pixels.base import MaskPlan, PixelError
from dicom_proxy.deidentify.pixels.registry import codec_for
from dicom_proxy.deidentify.pixels.rules import Box, MatchField, Rule, RuleSet, load_rules
from dicom_proxy.models import Refused
from dicom_proxy.part10 import CODEC_LOCK, materialize_pixel_data
from dicom_proxy.status import StoreStatus

__all__ = ["PixelCleaner", "PixelOutcome", "Risk"]

# Elements that carry image content (PS3.3 C.7.6.3, C.7.6.24, A.45.1.4).
_PIXEL_DATA = "PixelData"
_CONTENT_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "EncapsulatedDocument")
_ICON_IMAGE_SEQUENCE = 0x00880200
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)  # repeating group 60xx (PS3.3 C.9.2)


@dataclass(frozen=True)
class PixelOutcome:
    """What the pixel stage did. `cleaned`: a rule masked the pixels (add code 113101).

    `rules`: names of the rules applied (site-authored, safe to log).
    `transfer_syntax_changed`: the object now has another syntax (the forwarder negotiates it).
    `overlays_cleaned`: always False: overlays and the Icon Image Sequence are removed by this
    stage when it masks or removes pixels, never masked (PS3.15 Table E.1-1: X).
    """

    cleaned: bool = False
    pixels_removed: bool = False
    rules: tuple[str, ...] = ()
    transfer_syntax_changed: bool = False
    overlays_cleaned: bool = False


class Risk(Enum):
    """Why an object is assumed to carry burned-in text (PS3.15 E.3.1)."""

    BURNED_IN_ANNOTATION = "Burned In Annotation (0028,0301) is YES"
    HIGH_RISK_MODALITY = "Modality (0008,0060) is listed as high risk"
    HIGH_RISK_SOP_CLASS = "SOP Class UID (0008,0016) is listed as high risk"


class PixelCleaner:
    """Apply the site's pixel rules. Immutable after construction, so thread-safe."""

    def __init__(self, config: PixelConfig) -> None:
        self.config = config
        # load_config read the rules file once; a hand-built config (tests) has not yet.
        if config.rules is not None:
            self.rule_set = config.rules
        else:
            self.rule_set = load_rules(config.rules_file) if config.rules_file is not None else RuleSet()
        self._modalities = frozenset(m.strip() for m in config.high_risk_modalities)
        self._sop_classes = frozenset(u.strip() for u in config.high_risk_sop_classes)

    def clean(self, dataset: Dataset) -> PixelOutcome:
        """Mask `dataset`'s pixels in place when a rule applies; raise Refused when unsafe."""
        rules, boxes = self.plan(dataset)
        if rules:
            try:
                return self._mask(dataset, rules, boxes)
            except PixelError as exc:
                return self._uncleaned(dataset, f"pixel rule applies but {exc}")
        risk = self.risk(dataset)
        if risk is None or not any(k in dataset for k in _CONTENT_KEYWORDS):
            return PixelOutcome()
        return self._uncleaned(dataset, f"{risk.value} and no pixel rule cleans it")

    def plan(self, dataset: Dataset) -> tuple[tuple[Rule, ...], tuple[Box, ...]]:
        """Rules matching the original header and their boxes for this image's size.

        Reads header attributes only: Pixel Data is not touched here.
        """
        if _PIXEL_DATA not in dataset or not self.rule_set.rules:
            return (), ()
        header = _header(dataset)
        try:
            rows, columns = int(dataset.Rows), int(dataset.Columns)
        except (AttributeError, TypeError, ValueError):
            return (), ()
        matched: list[Rule] = []
        boxes: list[Box] = []
        for rule in self.rule_set.rules:
            if not rule.matches(header):
                continue
            rule_boxes = rule.boxes(rows, columns)
            if rule_boxes is None:
                continue
            matched.append(rule)
            boxes.extend(rule_boxes)
        return tuple(matched), tuple(dict.fromkeys(boxes))

    def risk(self, dataset: Dataset) -> Risk | None:
        """The first reason to assume burned-in text, or None."""
        if str(dataset.get("BurnedInAnnotation", "")).strip().upper() == "YES":
            return Risk.BURNED_IN_ANNOTATION
        if str(dataset.get("Modality", "")).strip() in self._modalities:
            return Risk.HIGH_RISK_MODALITY
        if str(dataset.get("SOPClassUID", "")).strip() in self._sop_classes:
            return Risk.HIGH_RISK_SOP_CLASS
        return None

    def _mask(
        self, dataset: Dataset, rules: tuple[Rule, ...], boxes: tuple[Box, ...]
    ) -> PixelOutcome:
        materialize_pixel_data(dataset)
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
        codec = codec_for(syntax)
        if codec is None:
            raise PixelError("no decoder for the transfer syntax")
        fills = {rule.fill for rule in rules}
        if len(fills) > 1:
            raise PixelError("matching rules disagree on the fill value")
        plan = MaskPlan(
            boxes,
            fills.pop(),
            self.config.allow_lossy_recompression,
            clear_unused_bits=_has_embedded_overlay(dataset),
        )
        with CODEC_LOCK:
            codec.mask(dataset, plan)
        dataset.BurnedInAnnotation = "NO"
        _remove_icon_and_overlays(dataset)
        return PixelOutcome(
            cleaned=True,
            rules=tuple(r.name for r in rules),
            transfer_syntax_changed=UID(dataset.file_meta.TransferSyntaxUID) != syntax,
        )

    def _uncleaned(self, dataset: Dataset, reason: str) -> PixelOutcome:
        if self.config.on_uncleaned != "remove_pixels":
            raise Refused(reason, StoreStatus.PIXELS_NOT_CLEANABLE)
        for keyword in (*_CONTENT_KEYWORDS, "ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in dataset:
                del dataset[keyword]
        _remove_icon_and_overlays(dataset)
        return PixelOutcome(pixels_removed=True)


def _header(dataset: Dataset) -> dict[MatchField, str | None]:
    """Original header values for the rules' conditions (shared with profile filters)."""
    return header_values(dataset)


def _remove_icon_and_overlays(dataset: Dataset) -> None:
    """Icon Image Sequence and overlays may show the same text (PS3.15 Table E.1-1: X)."""
    if _ICON_IMAGE_SEQUENCE in dataset:
        del dataset[_ICON_IMAGE_SEQUENCE]
    # keys(): iterating a Dataset yields elements, not tags
    overlay_tags = [tag for tag in dataset.keys() if tag.group in _OVERLAY_GROUPS]  # noqa: SIM118
    for tag in overlay_tags:
        del dataset[tag]


def _has_embedded_overlay(dataset: Dataset) -> bool:
    """An overlay group without Overlay Data (60xx,3000) keeps its bitmap in the high bits of
    Pixel Data (retired, PS3.5 8.1.2; PS3.3 C.9.2.1.1)."""
    for group in _OVERLAY_GROUPS:
        if (group << 16 | 0x0010) in dataset and (group << 16 | 0x3000) not in dataset:
            return True
    return False
