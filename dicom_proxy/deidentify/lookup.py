"""Which compiled rule applies to one element (PS3.15 Table E.1-1 rows, options, overrides).

The single place where tags, repeating groups (curves 50xx, overlays 60xx, PS3.5 7.6) and
private attributes (PS3.5 7.8, identified by creator, group and element byte) are resolved.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
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


def rule_for(policy: Policy, dataset: Dataset, element: DataElement) -> Rule:
    """The rule for `element` of `dataset` (the creator of a private element is read there)."""
    tag = int(element.tag)
    rule = policy.rules.get(tag)
    if rule is not None:
        return rule
    group, number = tag >> 16, tag & 0xFFFF
    if group & 1:
        return _private_rule(policy, dataset, group, number, element.VR)
    if number == 0:
        return GROUP_LENGTH
    if 0x5000 <= group <= 0x50FF:
        return policy.curve
    if 0x6000 <= group <= 0x60FF:
        return _overlay_rule(policy, number, element.VR)
    return policy.unlisted(element.VR)


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
