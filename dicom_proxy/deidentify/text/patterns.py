"""Pattern scrubbing (PS3.15 E.3.5 and HIPAA Safe Harbor 164.514(b)(2)): dates in any
notation and language, ages over 89, times, phone numbers, e-mail addresses, UIDs, identifiers
(runs of letters and digits), and names that follow a title or relation ("Dr. …", "wife …").

All patterns run on folded text (normalise.fold: lower case, no accents, NFKC digits), so one
pattern covers "MÄRZ", "März" and "marz"; matches map back to the original characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from dicom_proxy.deidentify.text.normalise import remembered_for_short_texts

_MONTH_NAMES = (  # noqa: SIM905 (a list of words reads better as text)
    # English, German, French, Spanish, Italian, Portuguese, Dutch (folded: no accents)
    "january february march april may june july august september october november december "
    "januar februar marz mai juni juli oktober dezember "
    "janvier fevrier mars avril juin juillet aout septembre octobre novembre decembre "
    "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre noviembre diciembre "
    "gennaio febbraio aprile maggio giugno luglio settembre ottobre dicembre "
    "janeiro fevereiro marco maio junho julho setembro outubro dezembro "
    "januari februari maart mei augustus "
    # Russian (nominative and genitive), folded: ё -> е
    "январь января февраль февраля март марта апрель апреля май мая июнь июня июль июля "
    "август августа сентябрь сентября октябрь октября ноябрь ноября декабрь декабря"
).split()
_MONTH_ABBREVIATIONS = [
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "janv",
    "fevr",
    "avr",
    "juil",
    "dez",
    "okt",
    "ene",
    "abr",
    "ago",
    "dic",
    "gen",
    "mag",
    "giu",
    "lug",
    "set",
    "ott",
]
MONTH = (
    r"(?:"
    + "|".join(sorted(set(_MONTH_NAMES), key=len, reverse=True))
    + "|"
    + "|".join(sorted(set(_MONTH_ABBREVIATIONS), key=len, reverse=True))
    + r")\.?"
)
_ROMAN = r"(?:xii|xi|x|ix|viii|vii|vi|v|iv|iii|ii|i)"
_DAY = r"(?:[0-3]?\d)(?:st|nd|rd|th|er|eme|e|o|a|\.)?"
_YEAR = r"(?:\d{4}|'?\d{2})"
_JOIN = r"(?:\s*(?:de|of|del|du|the)\s+|\s*[-/.,]\s*|\s+)"
_AGE_UNITS = r"(?:y(?:ears?|rs?|o|/o|\.o\.)?|years?[- ]old|year|jahre?n?|ans?|anos|anni|jaar|lat|лет|года?)"
_AGE_NUMBER = r"(?:9\d|1[0-4]\d)"

DATE_PATTERNS = (
    rf"\b{_DAY}{_JOIN}{MONTH}{_JOIN}{_YEAR}\b",  # 11 March 1956, 11-MAR-56, 11th of March, 1956
    rf"\b{MONTH}{_JOIN}{_DAY}{_JOIN}{_YEAR}\b",  # March 11th, 1956
    rf"\b\d{{4}}{_JOIN}{MONTH}{_JOIN}{_DAY}\b",  # 1956 March 11
    rf"\b{MONTH}{_JOIN}\d{{4}}\b",  # March 1956
    rf"\b{_DAY}{_JOIN}{_ROMAN}{_JOIN}{_YEAR}\b",  # 11.III.1956
    r"\b\d{1,4}\s*[-/.]\s*\d{1,2}\s*[-/.]\s*\d{1,4}\b",  # 11/03/56, 56-03-11, 1956-03-11
    r"\d{2,4}\s*[年년]\s*\d{1,2}\s*[月월](?:\s*\d{1,2}\s*[日일])?",  # 1956年3月11日, 1956년 3월 11일
    r"\d{1,2}\s*[月월]\s*\d{1,2}\s*[日일]",
    r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[ap]\.?m\.?\b)?",  # 14:05, 2:05 pm
)
AGE_PATTERNS = (
    rf"\b0?{_AGE_NUMBER}\s*-?\s*{_AGE_UNITS}(?:[- ]?(?:old|alt))?(?![^\W_])",  # 92 year old, 092Y, 92yo
    rf"\b(?:aged?|alter|edad|eta|возраст)\s*:?\s*{_AGE_NUMBER}\b",  # aged 92, age: 92
    rf"\b{_AGE_NUMBER}\s*[歳岁才세]",  # 92歳
)
OTHER_PATTERNS = (
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # e-mail
    r"\b\d+(?:\.\d+){3,}\b",  # UIDs and other dotted identifiers
    r"\d{5,}",  # long digit runs (YYYYMMDD dates, MRNs...)
)
SCRUB = re.compile("|".join((*DATE_PATTERNS, *AGE_PATTERNS, *OTHER_PATTERNS)))

_PHONE = re.compile(r"\+?\(?\d[\d\s().-]{6,}\d")

# Runs of letters and digits (with - _ / # inside): identifiers when they hold 4+ digits, unless
# they read as a measurement (120kv, 512x512, 2.5mm) or a diffusion b-value (b1000).
_RUN = re.compile(r"(?<![^\W_])[^\W_]+(?:[-_/#][^\W_]+)*")
_MEASUREMENT = re.compile(r"\d+(?:[.,]\d+)?(?:x\d+(?:[.,]\d+)?)*[^\W\d_]{0,4}|b\d{1,5}")


@remembered_for_short_texts
def scrub_spans(folded_text: str) -> tuple[tuple[int, int], ...]:
    """Spans of `folded_text` to remove: dates, ages over 89, phones, e-mails, identifiers."""
    return tuple(_scrub_spans(folded_text))


def _scrub_spans(folded_text: str) -> Iterator[tuple[int, int]]:
    for match in SCRUB.finditer(folded_text):
        yield match.span()
    for match in _PHONE.finditer(folded_text):
        if sum(c.isdigit() for c in match.group()) >= 7:
            yield match.span()
    for match in _RUN.finditer(folded_text):
        run = match.group()
        digits = sum(c.isdigit() for c in run)
        if digits >= 4 and digits < len(run) and not _MEASUREMENT.fullmatch(run):
            yield match.span()


# Names after a title or a relation: the title takes the next word whatever its case; a
# relation only capitalised words (so "mg per kg" keeps "kg").
TITLES = frozenset(
    [
        "dr",
        "dr.",
        "doctor",
        "doktor",
        "dott",
        "dott.ssa",
        "prof",
        "prof.",
        "professor",
        "mr",
        "mr.",
        "mrs",
        "mrs.",
        "ms",
        "ms.",
        "miss",
        "mx",
        "sir",
        "dame",
        "herr",
        "frau",
        "mme",
        "mlle",
        "sr",
        "sra",
        "srta",
        "sig",
        "sig.ra",
        "don",
        "dona",
        "nurse",
    ]
)
RELATIONS = frozenset(
    [
        "wife",
        "husband",
        "son",
        "daughter",
        "mother",
        "father",
        "brother",
        "sister",
        "partner",
        "spouse",
        "friend",
        "neighbour",
        "neighbor",
        "guardian",
        "parent",
        "per",
        "by",
        "attn",
        "cc",
        "signed",
        "signature",
        "referrer",
        "reviewer",
        "radiologist",
        "technologist",
        "tech",
        "physician",
        "consultant",
        "name",
    ]
)
SUFFIXES = frozenset(["md", "phd", "rn", "do", "mbbs", "frcr", "frcp", "dds"])
UNSPACED_TITLE = re.compile(
    r"([\u3040-\u30ff\u3400-\u9fff\uac00-\ud7a3]{1,3})(?=医生|医師|先生|様|さま|さん|くん|ちゃん|氏|씨|님|선생님|교수|教授|主任)"
)


def is_measurement(word: str) -> bool:
    """A number, a number with a unit (120kv, 2.5mm), dimensions (512x512) or a b-value."""
    return _MEASUREMENT.fullmatch(word) is not None
