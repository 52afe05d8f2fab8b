"""Which compiled rule applies to one element (PS3.15 Table E.1-1 rows, options, overrides).

The single place where tags, repeating groups (curves 50xx, overlays 60xx, PS3.5 7.6) and
private attributes (PS3.5 7.8, identified by creator, group and element byte) are resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from dicom_proxy.dictionary import definition_vr as _dictionary_vr
from dicom_proxy.policy.actions import Action
from dicom_proxy.policy.model import Policy, Rule
from dicom_proxy.policy.special import (
    GROUP_LENGTH,
    MISMATCHED_VR,
    OVERLAY_PLANE,
    PRIVATE_CREATOR,
    SAFE_PRIVATE_TEXT,
    SAFE_PRIVATE_UNKNOWN,
)

_BINARY = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT", "OB", "OW", "OF", "OD", "OL", "OV"})
_NON_TEXT = frozenset(
    {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "AT", "OB", "OW", "OF", "OD", "OL", "OV", "SQ"}
)


# Yielded instead of a VR (never a real VR, PS3.5 6.2): the declared VR contradicts the
# data dictionary.
VR_MISMATCH = "?mismatch"


def cheap_elements(dataset: Dataset) -> Iterator[tuple[DataElement | RawDataElement, str]]:
    """Each top-level element of `dataset` with the VR its policy is decided on, without
    converting raw values.

    Converting a value is most of pydicom's parsing cost; numbers and binary values that are
    kept or removed never need it. The VR a sender declares is not trusted on its own: text
    declared as a number would otherwise be kept unread. For a public attribute, a declared
    VR the data dictionary does not allow yields VR_MISMATCH (removed, see rule_for). UN and
    implicit-VR private elements are converted: pydicom resolves their VR from its
    dictionaries.
    """
    for element in list(dataset.elements()):
        tag = int(element.tag)
        declared = element.VR
        if declared is None or (declared == "UN" and isinstance(element, RawDataElement)):
            known = _dictionary_vr(tag)
            if known is not None and declared is None:
                yield element, known
                continue
            element = dataset[element.tag]
            declared = element.VR
        yield element, trusted_vr(tag, str(declared))



def trusted_vr(tag: int, declared: str) -> str:
    """The VR the policy is decided on for an element declared `declared` (VR_MISMATCH when
    the data dictionary does not allow it; see cheap_elements)."""
    if tag >> 16 & 1 or tag & 0xFFFF == 0:
        return declared  # private (checked against Table E.3.10-1) or group length (removed)
    known = _dictionary_vr(tag)
    if known is None:
        return declared  # checked against the table's VR, or removed as unknown (rule_for)
    return declared if _allowed(declared, known) else VR_MISMATCH


def _allowed(declared: str, expected: str) -> bool:
    """`declared` is `expected` or one of its alternatives ("OB or OW", "US or SS")."""
    return declared == expected or declared in expected.split(" or ")


def converted(dataset: Dataset, element: DataElement | RawDataElement) -> DataElement:
    """The converted form of `element` (converting it in `dataset` if it is still raw)."""
    return element if isinstance(element, DataElement) else dataset[element.tag]


def rule_for(policy: Policy, dataset: Dataset, element: DataElement | RawDataElement, vr: str | None = None) -> Rule:
    """The rule for `element` of `dataset` (the creator of a private element is read there)."""
    return rule_at(policy, int(element.tag), vr if vr is not None else str(element.VR), creators_of(dataset))


def creators_of(dataset: Dataset) -> Callable[[int], str]:
    """The Private Creator lookup of rule_at for a pydicom data set."""

    def creator(tag: int) -> str:
        element = dataset.get(tag)
        return str(element.value).strip() if element is not None else ""

    return creator


def rule_at(policy: Policy, tag: int, vr: str, creator_of: Callable[[int], str]) -> Rule:
    """The rule for the element `tag` whose VR is decided to be `vr` (see cheap_elements);
    `creator_of` gives the value of a Private Creator element of the same data set by its tag
    ("" when there is none)."""
    if vr == VR_MISMATCH:
        return MISMATCHED_VR
    rule = policy.rules.get(tag)
    if rule is not None:
        if rule.vr and not _allowed(vr, rule.vr):
            return MISMATCHED_VR
        return rule
    group, number = tag >> 16, tag & 0xFFFF
    if group & 1:
        return _private_rule(policy, creator_of, group, number, vr)
    if number == 0:
        return GROUP_LENGTH
    if 0x5000 <= group <= 0x50FF:
        return policy.curve
    if 0x6000 <= group <= 0x60FF:
        return _overlay_rule(policy, number, vr)
    if _dictionary_vr(tag) is None:
        # Neither the table nor the dictionary knows it: the declared VR is all we have, so the
        # value counts as unknown content (UN): removed unless unlisted_attributes = "keep".
        return policy.unlisted("UN")
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


def _private_rule(policy: Policy, creator_of: Callable[[int], str], group: int, number: int, vr: str) -> Rule:
    if number < 0x0010:
        return policy.private_default
    if number <= 0x00FF:
        return PRIVATE_CREATOR
    if not policy.private_rules:
        return policy.private_default
    creator = creator_of((group << 16) | (number >> 8))
    rule = policy.private_rules.get((creator, group, number & 0xFF))
    if rule is None:
        return policy.private_default
    if rule.action is not Action.KEEP:
        return rule
    if vr == "UN":
        # Bytes of unknown meaning: kept only where the table's VR is binary anyway.
        return rule if rule.vr in _BINARY else SAFE_PRIVATE_UNKNOWN
    if rule.vr and not _allowed(vr, rule.vr):
        return SAFE_PRIVATE_UNKNOWN  # declared VR contradicts the table: value cannot be checked
    if vr not in _NON_TEXT:
        return SAFE_PRIVATE_TEXT
    return rule
