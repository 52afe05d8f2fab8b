"""Standard meanings of coded concepts (PS3.16; SNOMED CT, LOINC, UCUM... as pydicom ships
them): a Code Meaning is what its code means (PS3.3 8.3), so a known code gets its standard
meaning instead of the sender's text, which may carry anything."""

from __future__ import annotations

from functools import cache


@cache
def _meanings() -> dict[tuple[str, str], str]:
    from pydicom.sr._concepts_dict import concepts

    result: dict[tuple[str, str], str] = {}
    table: dict[str, dict[str, dict[str, tuple[str, list[int]]]]] = concepts  # type: ignore[assignment]
    for scheme, by_keyword in table.items():
        for codes in by_keyword.values():
            for value, (meaning, _cids) in codes.items():
                result.setdefault((scheme, value), meaning)
    # Scheme designators with the same meaning (PS3.16 8): SRT is the old name of SCT.
    for (scheme, value), meaning in list(result.items()):
        if scheme == "SCT":
            result.setdefault(("SRT", value), meaning)
    return result


def standard_meaning(scheme: str, value: str) -> str | None:
    """The meaning of code `value` in coding scheme `scheme`, or None when not known."""
    meaning = _meanings().get((scheme.strip(), value.strip()))
    return meaning[:64] if meaning else None  # Code Meaning is LO (64 characters)
