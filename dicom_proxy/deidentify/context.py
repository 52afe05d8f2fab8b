"""Per-object state shared by the stages (never shared between objects or threads)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dicom_proxy.policy import Policy


@dataclass
class Context:
    """What `plan` learns from the original header, and what `tags` generates."""

    policy: Policy
    key: bytes
    encodings: list[str]
    date_offset: int = 0
    # Case-folded words of identifying values (names, IDs, addresses...), for clean_text.
    identifiers: frozenset[str] = frozenset()
    # Original identifying values -> the attribute path where first seen (for verify).
    needles: dict[str, str] = field(default_factory=dict)
    # Original values that the policy keeps (K), case-folded: never searched for.
    kept: set[str] = field(default_factory=set)
    # Values the engine wrote (pseudonyms, dummies, shifted dates): never searched for.
    generated: set[str] = field(default_factory=set)
    dates_shifted: bool = False
