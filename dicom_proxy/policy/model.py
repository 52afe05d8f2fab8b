"""The compiled policy: one frozen object, dict lookups by tag, built once per Engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from dicom_proxy.policy.actions import Action
from dicom_proxy.policy.options import Option

# (private creator, group, element low byte), PS3.5 7.8.1: a private attribute's identity.
PrivateKey = tuple[str, int, int]


class TextMode(Enum):
    """How action C cleans a text value (deidentify/text/clean.py)."""

    WORDS = "words"  # the object's identifying terms only (code strings, code values)
    CLEAN = "clean"  # also dates, ages over 89, phones, e-mails, identifiers, titled names
    ALLOWLIST = "allowlist"  # after CLEAN, only descriptor vocabulary words and numbers


@dataclass(frozen=True)
class Rule:
    """What happens to one attribute, and why (shown by ``dicom-proxy show-policy``)."""

    tag: int  # for pattern and private rules: the first tag of the range
    name: str
    keyword: str
    vr: str  # PS3.6 VR; "" when the rule covers several VRs
    action: Action
    why: str
    # The value identifies a person, place or record (names, IDs, addresses...): its words
    # are removed from cleaned text and it is searched for in the output (verify).
    identifying: bool = False
    # For action C on text: how much stays (PS3.15 E.3.5; [deidentify] text).
    text: TextMode = TextMode.CLEAN

    @property
    def tag_text(self) -> str:
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class Policy:
    """Table E.1-1 (edition `edition`) with `options` switched on and site overrides applied.

    Lookup order for a public attribute: `rules[tag]`, then the repeating groups (curves
    50xx, overlays 60xx), then `unlisted_by_vr[vr]`. For a private attribute:
    `private_rules[(creator, group, element & 0xFF)]`, then `private_default`.
    """

    edition: str
    options: tuple[Option, ...]
    rules: Mapping[int, Rule]
    curve: Rule
    overlay_data: Rule
    overlay_comments: Rule
    private_default: Rule
    private_rules: Mapping[PrivateKey, Rule]
    unlisted_by_vr: Mapping[str, Rule]
    unlisted_attributes: Literal["remove", "keep"]
    overrides_applied: int = 0
    # Rules the engine applies that are not rows of Table E.1-1 (group lengths, private
    # creators, overlay planes, VR mismatches...): shown by show-policy (resolve.py).
    special: tuple[Rule, ...] = ()
    text_mode: Literal["clean", "allowlist"] = "clean"

    @property
    def retain_uids(self) -> bool:
        return Option.RETAIN_UIDS in self.options

    @property
    def shift_dates(self) -> bool:
        """Retain Longitudinal Temporal Information with Modified Dates (PS3.15 E.3.6)."""
        return Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options

    def unlisted(self, vr: str) -> Rule:
        """The rule for a public attribute that Table E.1-1 does not list."""
        return self.unlisted_by_vr.get(vr) or self.unlisted_by_vr["UN"]
