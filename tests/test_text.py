"""Clean free text (PS3.15 E.3.5) and dates (E.3.6)."""

from __future__ import annotations

import pytest

from dicom_proxy.deidentify.dates import shift_da, shift_dt
from dicom_proxy.deidentify.text import clean_text, identifier_words

IDS = frozenset(identifier_words("DOE^JOHN") | identifier_words("MRN123") | identifier_words("Mercy General"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("XR CHEST AP PORTABLE for John Doe", "XR CHEST AP PORTABLE for"),
        ("CT HEAD doe, john MRN123", "CT HEAD"),
        ("scan 2021-03-14 at 14:05", "scan at"),
        ("call 555-123-4567 or x@y.org", "call or"),
        ("ref 1234567 see 12/03/2021", "ref see"),
        ("Mercy General follow-up", "follow-up"),
        ("", ""),
    ],
)
def test_clean_text(text: str, expected: str) -> None:
    assert clean_text(text, IDS) == expected


def test_words_only_for_codes() -> None:
    assert clean_text("20210314 DOE", IDS, patterns=False) == "20210314"


def test_shift_dates() -> None:
    assert shift_da("20210301", -1) == "20210228"
    assert shift_dt("20210301120000.5+0100", 1) == "20210302120000.5+0100"
    assert shift_da("2021", 1) is None and shift_dt("2021", 1) is None
    assert shift_da("20211301", 1) is None
