"""Clean Pixel Data (PS3.15 E.3.1): find burned-in text, mask it, fail closed.

The engine calls `PixelCleaner.clean(dataset)` after planning and before tag actions, so rules
match on the original header. The flow for one object, each step in one place:

1. Sources of boxes: the site's rules (``rules.py``, header only) and, where ``detect`` says
   so, a text detector (``detect/``) that looks at the pixels.
2. Decode once (``registry.py`` picks the codec family by transfer syntax) when any source
   needs the pixels; every source sees the same decoded frames.
3. Merge the boxes; refuse if detected text would cover more than ``max_mask_share`` of the
   image (PS3.15 E.3.1 wants the text gone, not the image).
4. Fill the boxes in every frame and re-encode losslessly in the original syntax (lossy
   originals are stored uncompressed unless the site allows lossy recompression); set Burned
   In Annotation (0028,0301) to NO only when every configured source ran; drop the Icon Image
   Sequence and overlays (PS3.15 Table E.1-1: X unless cleaned).
5. An object no source could look at (detection off, no decoder for its syntax, a decode
   failure) is forwarded untouched unless it is high risk (``risk.py``): then it is refused
   with PIXELS_NOT_CLEANABLE, or, only if ``on_uncleaned = "remove_pixels"``, loses its pixels.

`PixelCleaner.preview(dataset)` runs steps 1-3 without changing anything (for ``preview``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_proxy.conditions import header_values
from dicom_proxy.config import PixelConfig
from dicom_proxy.deidentify.pixels.base import (
    DecodedPixels,
    LayoutError,
    MaskPlan,
    PixelCodec,
    PixelError,
    resolve_fill,
)
from dicom_proxy.deidentify.pixels.detect import FoundBox, Hints, TextDetector
from dicom_proxy.deidentify.pixels.detect.frames import search
from dicom_proxy.deidentify.pixels.detect.registry import make_detector
from dicom_proxy.deidentify.pixels.registry import codec_for
from dicom_proxy.deidentify.pixels.risk import Risk, RiskCheck, normalised
from dicom_proxy.deidentify.pixels.rules import Box, MatchField, Rule, RuleSet, load_rules
from dicom_proxy.models import Refused
from dicom_proxy.part10 import CODEC_LOCK, materialize_pixel_data
from dicom_proxy.part10 import PIXEL_DATA as PIXEL_DATA_TAG
from dicom_proxy.status import StoreStatus

__all__ = ["FoundBox", "PixelCleaner", "PixelOutcome", "PixelPreview", "Risk", "TextDetector"]

# Elements that carry image content (PS3.3 C.7.6.3, C.7.6.24, A.45.1.4).
_PIXEL_DATA = "PixelData"
_CONTENT_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "EncapsulatedDocument")
_ICON_IMAGE_SEQUENCE = 0x00880200
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)  # repeating group 60xx (PS3.3 C.9.2)
RULES_SOURCE = "rules"  # in `sources`; each rule's boxes carry the source "rule:<name>"
_RULE_PREFIX = "rule:"


@dataclass(frozen=True)
class PixelOutcome:
    """What the pixel stage did. `cleaned`: the Clean Pixel Data process ran with every
    configured source (add code 113101, Burned In Annotation NO).

    `rules`: names of the rules applied (site-authored, safe to log).
    `sources`: the sources that looked at this object (``rules``, detector names).
    `boxes`: how many boxes were filled.
    `transfer_syntax_changed`: the object now has another syntax (the forwarder negotiates it).
    `overlays_cleaned`: always False: overlays and the Icon Image Sequence are removed by this
    stage when it masks or removes pixels, never masked (PS3.15 Table E.1-1: X).
    """

    cleaned: bool = False
    pixels_removed: bool = False
    rules: tuple[str, ...] = ()
    transfer_syntax_changed: bool = False
    overlays_cleaned: bool = False
    sources: tuple[str, ...] = ()
    boxes: int = 0


@dataclass(frozen=True)
class PixelPreview:
    """What the pixel stage would do with an object, without changing it.

    `boxes`: every box each source wants filled (pixel coordinates, source name, score).
    `sources`: the sources that looked at the object; `complete`: every configured source did.
    `refusal`: why the object would be refused (PIXELS_NOT_CLEANABLE), None if it would not.
    `risk`: why the object is assumed to carry text, if it is.
    `mask_share`: share of the image the detected boxes cover (0 to 1).
    `rules`: names of the matching rules.
    """

    boxes: tuple[FoundBox, ...] = ()
    sources: tuple[str, ...] = ()
    complete: bool = False
    refusal: str | None = None
    risk: Risk | None = None
    mask_share: float = 0.0
    rules: tuple[str, ...] = ()


@dataclass
class _Analysis:
    """A preview plus what `clean` needs to finish the job (the decoded pixels)."""

    preview: PixelPreview
    pixels: DecodedPixels | None = None
    codec: PixelCodec | None = None
    matched: tuple[Rule, ...] = ()


class PixelCleaner:
    """Apply the site's pixel rules and the configured text detector. Immutable after
    construction, so thread-safe."""

    def __init__(self, config: PixelConfig, detector: TextDetector | None = None) -> None:
        self.config = config
        # load_config read the rules file once; a hand-built config (tests) has not yet.
        if config.rules is not None:
            self.rule_set = config.rules
        else:
            self.rule_set = load_rules(config.rules_file) if config.rules_file is not None else RuleSet()
        self.risk = RiskCheck(config.high_risk_modalities, config.high_risk_sop_classes)
        self.detector: TextDetector | None = None
        if config.detect != "off":
            self.detector = detector or make_detector(config.detector, config.mask_text)

    def clean(self, dataset: Dataset) -> PixelOutcome:
        """Mask `dataset`'s pixels in place where any source finds text; raise Refused when
        that cannot be done safely."""
        analysis = self._analyse(dataset)
        preview = analysis.preview
        if preview.refusal is not None:
            return self._uncleaned(dataset, preview.refusal)
        if analysis.pixels is None or analysis.codec is None:
            return PixelOutcome(sources=preview.sources)
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
        try:
            changed = self._mask(dataset, analysis)
        except PixelError as exc:
            return self._uncleaned(dataset, f"boxes found but {exc}")
        if preview.complete:
            dataset.BurnedInAnnotation = "NO"
        if changed:  # the icon is a thumbnail of the unmasked image; overlays are not searched
            _remove_icon_and_overlays(dataset)
        return PixelOutcome(
            cleaned=preview.complete,
            rules=preview.rules,
            transfer_syntax_changed=UID(dataset.file_meta.TransferSyntaxUID) != syntax,
            sources=preview.sources,
            boxes=len(preview.boxes),
        )

    def preview(self, dataset: Dataset) -> PixelPreview:
        """The boxes every source would fill and the refusal reason, if any; `dataset` is
        not changed (Pixel Data is decoded into a copy)."""
        return self._analyse(dataset).preview

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

    def _analyse(self, dataset: Dataset) -> _Analysis:
        risk = self.risk(dataset)
        if _PIXEL_DATA not in dataset:
            # Float pixels and encapsulated documents: no source can look at them.
            unsearchable = any(k in dataset for k in _CONTENT_KEYWORDS)
            refusal = f"{risk.value} and its content cannot be searched for text" if risk and unsearchable else None
            return _Analysis(PixelPreview(refusal=refusal, risk=risk))
        matched, _ = self.plan(dataset)
        found = _rule_boxes(dataset, matched)
        detect = self.detector is not None and (self.config.detect == "all" or risk is not None)
        if not matched and not detect:
            refusal = f"{risk.value} and no pixel rule cleans it" if risk else None
            return _Analysis(PixelPreview(refusal=refusal, risk=risk))
        names = tuple(r.name for r in matched)
        sources: tuple[str, ...] = (RULES_SOURCE,) if matched else ()
        try:
            codec, pixels = _decode(dataset)
        except PixelError as exc:
            if matched or risk is not None or isinstance(exc, LayoutError):
                reason = f"pixel rule applies but {exc}" if matched else f"{risk.value} and {exc}" if risk else str(exc)
                return _Analysis(PixelPreview(found, refusal=reason, risk=risk, rules=names))
            # Low risk and no rule: forwarded untouched, Burned In Annotation not claimed NO.
            return _Analysis(PixelPreview(risk=risk))
        if detect and self.detector is not None:
            try:
                found += self._detect(dataset, pixels, self.detector)
            except Exception as exc:
                return _Analysis(
                    PixelPreview(found, risk=risk, rules=names, refusal=f"text detection failed ({type(exc).__name__})")
                )
            sources += (self.detector.name,)
        share = _share(found, pixels)
        refusal = None
        if share > self.config.max_mask_share:
            refusal = f"detected text covers {share:.0%} of the image (max_mask_share)"
        complete = self.detector is None or detect
        preview = PixelPreview(found, sources, complete, refusal, risk, share, names)
        return _Analysis(preview, pixels, codec, matched)

    def _detect(self, dataset: Dataset, pixels: DecodedPixels, detector: TextDetector) -> tuple[FoundBox, ...]:
        g = pixels.geometry
        return search(detector, pixels.grey(), g.photometric == "MONOCHROME1", _hints(dataset))

    def _mask(self, dataset: Dataset, analysis: _Analysis) -> bool:
        """Fill the boxes and re-encode; False when there was nothing to change."""
        pixels, codec = analysis.pixels, analysis.codec
        assert pixels is not None and codec is not None
        g = pixels.geometry
        embedded_overlay = _has_embedded_overlay(dataset)
        detected = tuple(f.box for f in analysis.preview.boxes if not _from_rule(f))
        rule_boxes = tuple(dict.fromkeys(f.box for f in analysis.preview.boxes if _from_rule(f)))
        if not detected and not rule_boxes and not embedded_overlay:
            return False
        fills = {rule.fill for rule in analysis.matched}
        if len(fills) > 1:
            raise PixelError("matching rules disagree on the fill value")
        rule_fill = fills.pop() if fills else None
        if detected:
            pixels.fill(tuple(dict.fromkeys(detected)), resolve_fill(MaskPlan(()), g, g.photometric))
        if rule_boxes:
            pixels.fill(rule_boxes, resolve_fill(MaskPlan((), rule_fill), g, g.photometric))
        plan = MaskPlan(
            rule_boxes + detected,
            rule_fill,
            self.config.allow_lossy_recompression,
            clear_unused_bits=embedded_overlay,
        )
        with CODEC_LOCK:
            materialize_pixel_data(dataset)
            codec.encode(dataset, pixels, plan)
        return True

    def _uncleaned(self, dataset: Dataset, reason: str) -> PixelOutcome:
        if self.config.on_uncleaned != "remove_pixels":
            raise Refused(reason, StoreStatus.PIXELS_NOT_CLEANABLE)
        for keyword in (*_CONTENT_KEYWORDS, "ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in dataset:
                del dataset[keyword]
        _remove_icon_and_overlays(dataset)
        return PixelOutcome(pixels_removed=True)


def _decode(dataset: Dataset) -> tuple[PixelCodec, DecodedPixels]:
    """Decode every frame. The decoders need Pixel Data as bytes; afterwards the object's own
    element is put back as it was (a view of the received bytes), so an image with nothing to
    mask leaves without a copy (codec.py). `_mask` materialises it when boxes are filled."""
    codec = codec_for(dataset.file_meta.TransferSyntaxUID)
    if codec is None:
        raise PixelError("no decoder for the transfer syntax")
    element = dataset.get_item(PIXEL_DATA_TAG)
    value = element.value
    materialize_pixel_data(dataset)
    try:
        with CODEC_LOCK:
            return codec, codec.decode(dataset)
    finally:
        if isinstance(element, RawDataElement):
            dataset[PIXEL_DATA_TAG] = element
        else:
            element.value = value


def _from_rule(found: FoundBox) -> bool:
    return found.source.startswith(_RULE_PREFIX)


def _rule_boxes(dataset: Dataset, matched: tuple[Rule, ...]) -> tuple[FoundBox, ...]:
    """Each matching rule's boxes for this image, named by the rule (site-authored)."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)  # plan() matched: they are numbers
    return tuple(
        FoundBox(box, f"{_RULE_PREFIX}{rule.name}") for rule in matched for box in rule.boxes(rows, columns) or ()
    )


def _share(found: tuple[FoundBox, ...], pixels: DecodedPixels) -> float:
    """Share of the image covered by detected boxes (rules are the site's own choice)."""
    g = pixels.geometry
    detected = [f.box for f in found if not _from_rule(f)]
    if not detected or g.rows * g.columns == 0:
        return 0.0
    covered = np.zeros((g.rows, g.columns), dtype=bool)
    for b in detected:
        covered[b.top : b.bottom, b.left : b.right] = True
    return float(covered.mean())


# Header values a reading detector may compare text with (PS3.15 Table E.1-1: all D/Z/X).
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
)


def _hints(dataset: Dataset) -> Hints:
    values: list[str] = []
    for keyword in _IDENTIFYING:
        value = _value_or_none(dataset, keyword)
        if value is None:
            continue
        for part in str(value).replace("^", "\\").replace(" ", "\\").split("\\"):
            if len(normalised(part)) >= 2:
                values.append(normalised(part))
    return Hints(tuple(dict.fromkeys(values)))


def _value_or_none(dataset: Dataset, keyword: str) -> object:
    try:
        return dataset.get(keyword)
    except Exception:
        return None  # a value that does not parse gives no hint


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
