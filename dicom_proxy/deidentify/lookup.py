"""Which compiled rule applies to one element (PS3.15 Table E.1-1 rows, options, overrides).

The single place where tags, repeating groups (curves 50xx, overlays 60xx, PS3.5 7.6) and
private attributes (PS3.5 7.8, identified by creator, group and element byte) are resolved.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from dicom_proxy.policy import Action, Policy, Rule

GROUP_LENGTH = Rule(0, "Group Length", "", "UL", Action.REMOVE, "group lengths are recomputed (PS3.5 7.2)")
PRIVATE_CREATOR = Rule(0, "Private Creator", "", "LO", Action.KEEP, "kept while its block keeps an element")
OVERLAY_PLANE = Rule(0x60000000, "Overlay Plane attributes", "", "", Action.REMOVE,
                     "go with Overlay Data (PS3.3 C.9.2)")
# A safe private attribute (Table E.3.10-1) whose value does not have the listed, non-text VR
# is only safe after cleaning (PS3.15 E.3.10: "...only when their value is safe").
SAFE_PRIVATE_TEXT = Rule(0, "Private attribute with a text value", "", "", Action.CLEAN,
                         "retain_safe_private: text value cleaned")
SAFE_PRIVATE_UNKNOWN = Rule(0, "Private attribute of unknown VR", "", "UN", Action.REMOVE,
                            "retain_safe_private: value cannot be checked")
_NON_TEXT = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "AT",
                       "OB", "OW", "OF", "OD", "OL", "OV", "SQ"})


def cheap_elements(dataset: Dataset) -> Iterator[tuple[DataElement | RawDataElement, str]]:
    """Each top-level element of `dataset` with its VR, without converting raw values.

    Converting a value is most of pydicom's parsing cost; numbers and binary values that are
    kept or removed never need it. In implicit VR a raw element has no VR: the public
    dictionary gives it; private and unknown elements are converted (pydicom's private
    dictionaries need the creator), and so is UN, which pydicom replaces by the known VR.
    """
    for element in list(dataset.elements()):
        vr = element.VR
        if vr == "UN" and isinstance(element, RawDataElement):
            element = dataset[element.tag]
            vr = element.VR
        elif vr is None:
            tag = int(element.tag)
            try:
                vr = dictionary_VR(tag) if not tag >> 16 & 1 else None
            except KeyError:
                vr = None
            if vr is None:
                element = dataset[element.tag]
                vr = element.VR
        yield element, str(vr)


def converted(dataset: Dataset, element: DataElement | RawDataElement) -> DataElement:
    """The converted form of `element` (converting it in `dataset` if it is still raw)."""
    return element if isinstance(element, DataElement) else dataset[element.tag]


def rule_for(policy: Policy, dataset: Dataset, element: DataElement | RawDataElement, vr: str | None = None) -> Rule:
    """The rule for `element` of `dataset` (the creator of a private element is read there)."""
    tag = int(element.tag)
    vr = vr if vr is not None else str(element.VR)
    rule = policy.rules.get(tag)
    if rule is not None:
        return rule
    group, number = tag >> 16, tag & 0xFFFF
    if group & 1:
        return _private_rule(policy, dataset, group, number, vr)
    if number == 0:
        return GROUP_LENGTH
    if 0x5000 <= group <= 0x50FF:
        return policy.curve
    if 0x6000 <= group <= 0x60FF:
        return _overlay_rule(policy, number, vr)
    return policy.unlisted(vr)


def _overlay_rule(policy: Policy, number: int, vr: str) -> Rule:
    if number == 0x3000:
        return policy.overlay_data
    # Overlay Rows, Columns, Origin, Comments...: an overlay plane without its data is invalid
    # (PS3.3 C.9.2), so they go with Overlay Data (which cannot be cleaned unless the pixel
    # stage does it: see the overlays_cleaned hook in tags.py).
    if policy.overlay_data.action in (Action.REMOVE, Action.CLEAN):
        return OVERLAY_PLANE
    if number == 0x4000:
        return policy.overlay_comments
    return policy.unlisted(vr)


def _private_rule(policy: Policy, dataset: Dataset, group: int, number: int, vr: str) -> Rule:
    if number < 0x0010:
        return policy.private_default
    if number <= 0x00FF:
        return PRIVATE_CREATOR
    if not policy.private_rules:
        return policy.private_default
    creator_element = dataset.get((group << 16) | (number >> 8))
    creator = str(creator_element.value).strip() if creator_element is not None else ""
    rule = policy.private_rules.get((creator, group, number & 0xFF))
    if rule is None:
        return policy.private_default
    if rule.action is Action.KEEP and vr not in _NON_TEXT:
        if vr == "UN":
            return rule if rule.vr in _NON_TEXT and rule.vr != "SQ" else SAFE_PRIVATE_UNKNOWN
        return SAFE_PRIVATE_TEXT
    return rule
