"""Text: the shared normaliser, identifying terms, pattern scrubbing, the three text modes
(PS3.15 E.3.5), and dates (E.3.6)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_proxy.deidentify.dates import shift_da, shift_dt
from dicom_proxy.deidentify.text import Identifiers, TextCleaner, fold
from dicom_proxy.deidentify.text.codes import standard_meaning
from dicom_proxy.deidentify.text.vocabulary import Vocabulary, shipped
from dicom_proxy.policy import TextMode
from tests.adversarial import AGES, DATES, SCRIPT_SIZES, SCRIPTS


def _cleaner(*names: str, ids: tuple[str, ...] = ()) -> TextCleaner:
    identifiers = Identifiers()
    for name in names:
        identifiers.add_name(name, "PatientName")
    for value in ids:
        identifiers.add_identifier(value, "PatientID", shipped().words)
    return TextCleaner(identifiers.matcher(), shipped())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("XR CHEST AP PORTABLE for John Doe", "XR CHEST AP PORTABLE for"),
        ("CT HEAD doe, john MRN123", "CT HEAD"),
        ("scan 2021-03-14 at 14:05", "scan at"),
        ("call 555-123-4567 or x@y.org", "call or"),
        ("ref 1234567 see 12/03/2021", "ref see"),
        ("JohnDoe_axial", "axial"),
        ("J. Doe knee", "knee"),
        ("Doe, John Q follow-up", "follow-up"),
        ("DOEJ thorax", "thorax"),
        ("", ""),
    ],
)
def test_clean_text(text: str, expected: str) -> None:
    assert _cleaner("DOE^JOHN^QUINCY", ids=("MRN123",)).clean(text, TextMode.CLEAN) == expected


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("陈^伟", "胸部CT陈伟平扫", "胸部CT 平扫"),
        ("王^小明", "王小明头颅", "头颅"),
        ("山田^太郎=やまだ^たろう", "ヤマダタロウ様 胸部", "様 胸部"),
        ("ﾔﾏﾀﾞ^ﾀﾛｳ", "ヤマダ 腹部", "腹部"),
        ("MÜLLER^JÜRGEN", "Mueller Juergen knee", "knee"),
        ("MUELLER^JUERGEN", "Müller Jürgen knee", "knee"),
        ("Семёнов^Пётр", "Семенов Петр КТ", "КТ"),
        ("Παπαδόπουλος^Γιώργος", "ΠΑΠΑΔΟΠΟΥΛΟΣ θώρακας", "θώρακας"),
        ("Yıldırım^Işık", "YILDIRIM ISIK toraks", "toraks"),
    ],
)
def test_names_in_every_script_and_spelling(name: str, text: str, expected: str) -> None:
    assert _cleaner(name).clean(text, TextMode.CLEAN) == expected


@pytest.mark.parametrize("written", [*DATES, *AGES])
def test_dates_and_old_ages_in_any_notation(written: str) -> None:
    assert _cleaner().clean(f"chest {written} CT", TextMode.CLEAN) == "chest CT"


def test_young_ages_and_measurements_stay() -> None:
    assert (
        _cleaner().clean("45 year old 120kV 512x512 b1000 2.5mm", TextMode.CLEAN)
        == "45 year old 120kV 512x512 b1000 2.5mm"
    )


def test_titled_names_not_in_the_header() -> None:
    cleaner = _cleaner()
    assert cleaner.clean("read by Dr. Oyelaran per Smith; 5 mg per kg", TextMode.CLEAN) == "read by Dr. per 5 mg per kg"
    assert cleaner.clean("陈医生 复查", TextMode.CLEAN) == "医生 复查"


def test_identifier_runs() -> None:
    assert _cleaner().clean("order PLC2024-88123 T1W", TextMode.CLEAN) == "order T1W"


def test_words_mode_keeps_patterns() -> None:
    assert _cleaner("DOE^JOHN").clean("20210314 DOE", TextMode.WORDS) == "20210314"


def test_allowlist_keeps_descriptor_words_and_numbers() -> None:
    assert _cleaner().clean("CT chest 5 mm Okafor axial 胸部王", TextMode.ALLOWLIST) == "CT chest 5 mm axial 胸部"
    site = Vocabulary(["Thorax Schicht"])
    identifiers = Identifiers()
    assert (
        TextCleaner(identifiers.matcher(), site).clean("Thorax Schicht Okafor", TextMode.ALLOWLIST) == "Thorax Schicht"
    )


def test_fold() -> None:
    assert fold("ＹＡＭＡＤＡ") == "yamada"
    assert fold(unicodedata.normalize("NFD", "Zoë")) == fold("Zoë") == "zoe"
    assert fold("ё") == "е" and fold("ı") == "i" and fold("ά") == "α"
    assert fold("やまだ") == fold("ヤマダ") == fold("ﾔﾏﾀﾞ")


def test_known_code_meaning() -> None:
    assert standard_meaning("DCM", "121071") == "Finding"
    assert standard_meaning("99LOCAL", "x") is None


@settings(max_examples=200, deadline=None)
@given(
    script=st.sampled_from(sorted(SCRIPTS)),
    data=st.data(),
    spaced=st.booleans(),
    before=st.sampled_from(["CT ", "胸部", "Thorax ", ""]),
    after=st.sampled_from([" axial", "平扫", " 흉부", ""]),
)
def test_random_names_planted_in_text(script: str, data: st.DataObject, spaced: bool, before: str, after: str) -> None:
    low, high = SCRIPT_SIZES[script]
    family = data.draw(st.text(SCRIPTS[script], min_size=low, max_size=high))
    given_name = data.draw(st.text(SCRIPTS[script], min_size=low, max_size=high))
    separator = " " if spaced else ""
    text = before + (separator if before else "") + family + separator + given_name + separator + after
    cleaned = _cleaner(f"{family}^{given_name}").clean(text, TextMode.CLEAN)
    folded = fold(cleaned)
    assert fold(family) not in folded and fold(given_name) not in folded


def test_shift_dates() -> None:
    assert shift_da("20210301", -1) == "20210228"
    assert shift_dt("20210301120000.5+0100", 1) == "20210302120000.5+0100"
    assert shift_da("2021", 1) is None and shift_dt("2021", 1) is None
    assert shift_da("20211301", 1) is None
