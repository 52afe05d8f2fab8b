"""The data dictionary (PS3.6) as the engine asks it, once per tag.

pydicom's lookups build a Tag and walk its repeater masks on every call: a few microseconds,
paid for every element of every object by plan, tags and verify. The answers never change, so
each tag is looked up once per process. Private tags (odd groups) have no public definition.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.datadict import dictionary_VR, keyword_for_tag


@lru_cache(maxsize=8192)
def definition_vr(tag: int) -> str | None:
    """The VR PS3.6 defines for public `tag` ("US or SS" where it allows two); None if the
    tag is private or unknown."""
    if tag >> 16 & 1:
        return None
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


@lru_cache(maxsize=8192)
def attribute_name(tag: int) -> str:
    """The keyword of `tag`, or "(gggg,eeee)" where it has none: how attribute paths name it
    in plan's origins, verify's places and refusal reasons (never a value)."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
