"""Stage 4, verify: an independent check of the encoded output, trusting no earlier stage.

The output bytes are read again (elements.py for the usual Explicit VR Little Endian output,
pydicom for anything else, Deflated output inflated), and every value of every element, in
every nested item, File Meta included, is decoded (declared character set,
UTF-8 and Latin-1) and folded with the same normaliser as clean (text/normalise.py). It is
searched for every identifying value of the original header (plan: names with their
components and spellings, identifiers, dates, UIDs). The only exemption: a value found in
the very element it came from, where the policy keeps it (action K). Text the policy cleans
must also hold no date, age over 89, phone, e-mail or identifier pattern. Values the engine
writes whole (a dummy, the patient's pseudonyms, the de-identification record) are compared
with what the engine would write, not searched, and a code string made of defined terms
(vocabulary) is a code, not a name spelled the same. Pixel Data is the pixel stage's part.
Any hit refuses the object (fail closed); the reason names attribute paths, never a value.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

from pydicom import dcmread
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from dicom_proxy.deidentify import pseudonyms
from dicom_proxy.deidentify.context import Context
from dicom_proxy.deidentify.elements import Level, Unusual, default_encodings, read_output
from dicom_proxy.deidentify.record import expected_strings
from dicom_proxy.deidentify.text import fold, scrub_spans
from dicom_proxy.deidentify.values import DUMMY_STRINGS
from dicom_proxy.dictionary import attribute_name
from dicom_proxy.models import Refused
from dicom_proxy.part10 import Encoded
from dicom_proxy.policy import Action, Rule, TextMode
from dicom_proxy.policy.resolve import cheap_elements, creators_of, rule_at, trusted_vr

_PIXEL_DATA = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_NUMBERS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "AT", "UV", "SV", "OF", "OD", "OL", "OV", "US or SS"})
_DELIMITERS = (b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\xdd\x00\x00\x00\x00")
_META_ALIASES = {0x00020002: 0x00080016, 0x00020003: 0x00080018}
_RECORD = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x00280301})


def verify(encoded: Encoded, context: Context) -> None:
    """Raise Refused if an original identifying value of `context` is in `encoded`.

    The engine hands over the output with its Encrypted Content (0400,0520), if any, zeroed
    (encrypt.without_encrypted_content): ciphertext would match short values by chance.
    """
    checker = _Checker(context)
    try:
        # The usual encoding, read by elements.py; checks that pass here would pass there too.
        raw_meta, raw_dataset = read_output(_searched_parts(encoded))
        checker.walk_read(raw_meta, "", default_encodings(), top=True)
        checker.walk_read(raw_dataset, "", default_encodings(), top=True)
    except Unusual:
        meta, dataset = _parse(encoded)
        checker.walk(meta, "", top=True)
        checker.walk(dataset, "", top=True)


def _searched_parts(encoded: Encoded) -> list[bytes | memoryview]:
    """The header part and the parts after an untouched Pixel Data value (its own header and
    any delimiter are left out: they hold no text)."""
    parts = list(encoded.parts)
    if encoded.pixel_value is None:
        return parts
    return [parts[0], *(p for p in parts[encoded.pixel_value + 1 :] if bytes(p) not in _DELIMITERS)]


def _parse(encoded: Encoded) -> tuple[Dataset, Dataset]:
    """The output, parsed again: File Meta and the data set without Pixel Data's value."""
    parts = encoded.parts
    if encoded.pixel_value is None:
        parsed = dcmread(BytesIO(b"".join(parts)), force=True)
        return parsed.file_meta, parsed
    parsed = dcmread(BytesIO(bytes(parts[0])), force=True)
    syntax = UID(parsed.file_meta.TransferSyntaxUID)
    for part in parts[encoded.pixel_value + 1 :]:
        if bytes(part) in _DELIMITERS:
            continue
        tail = read_dataset(BytesIO(bytes(part)), syntax.is_implicit_VR, syntax.is_little_endian)
        for element in tail.elements():
            parsed[element.tag] = element
    return parsed.file_meta, parsed


class _Checker:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.matcher = context.matcher
        token = pseudonyms.patient_id(context.key, context.patient)
        self.pseudonyms = {0x00100020: token, 0x00100010: pseudonyms.patient_name(token)}
        self.record = expected_strings(context.policy, context.profile)

    def walk(self, dataset: Dataset, prefix: str, top: bool = False) -> None:
        encodings = convert_encodings(dataset._character_set)
        for raw, vr in cheap_elements(dataset):
            tag = int(raw.tag)
            if top and tag in _PIXEL_DATA:
                continue
            path = prefix + attribute_name(_META_ALIASES.get(tag, tag))
            if vr == "SQ":
                for index, item in enumerate(dataset[tag].value or ()):
                    self.walk(item, f"{path}[{index}].")
                continue
            if vr in _NUMBERS or raw.value is None:
                continue
            rule = self._rule(tag, vr, creators_of(dataset))
            for text in self._decodings(raw, vr, encodings):
                self._check(text, tag, vr, path, rule, top)

    def walk_read(self, level: Level, prefix: str, inherited: list[str], top: bool = False) -> None:
        """`walk` over what elements.read_output read: the same checks on the same values."""
        encodings = level.encodings(inherited)
        for element in level.elements:
            tag = element.tag
            if top and tag in _PIXEL_DATA:
                continue
            path = prefix + attribute_name(_META_ALIASES.get(tag, tag))
            vr = trusted_vr(tag, element.VR)
            if vr == "SQ":
                for index, item in enumerate(element.items):
                    self.walk_read(item, f"{path}[{index}].", encodings)
                continue
            if element.VR == "SQ":
                raise Unusual("a sequence where the dictionary has none")  # pydicom reads its bytes
            if vr in _NUMBERS:
                continue
            rule = self._rule(tag, vr, lambda creator: level.creator(creator, encodings))
            for text in self._decodings_of(element.value, encodings):
                self._check(text, tag, vr, path, rule, top)

    def _rule(self, tag: int, vr: str, creator_of: Callable[[int], str]) -> Rule | None:
        policy = self.context.policy
        if tag in _META_ALIASES:  # File Meta copies of the data set's SOP Class/Instance UIDs
            return policy.rules.get(_META_ALIASES[tag]) or policy.unlisted("UI")
        return rule_at(policy, tag, vr, creator_of) if tag >> 16 != 2 else None

    def _decodings(self, raw: DataElement | RawDataElement, vr: str, encodings: list[str]) -> list[str]:
        value = raw.value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._decodings_of(bytes(value), encodings)
        values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        return [str(v) for v in values if v is not None]  # type: ignore[union-attr]

    @staticmethod
    def _decodings_of(data: bytes, encodings: list[str]) -> list[str]:
        """Every reading of `data`: as declared, as UTF-8 and as Latin-1 (a value in another
        character set than declared must not slip through)."""
        if data.isascii():
            return [data.decode("ascii")]
        texts = {data.decode("utf-8", "ignore"), data.decode("latin-1")}
        try:
            texts.add(decode_bytes(data, encodings, set()))
        except Exception:
            pass
        return sorted(texts)

    def _check(self, text: str, tag: int, vr: str, path: str, rule: Rule | None, top: bool) -> None:
        for value in text.split("\\"):
            value = value.strip(" \x00")
            if not value or self._engine_wrote(value, tag, top):
                continue
            if vr == "CS" and self.context.cleaner.vocabulary.is_code(value):
                continue  # a defined term is a code, not a name spelled the same
            folded = fold(value)
            for hit in self.matcher.hits(folded):
                kept_here = rule is not None and rule.action is Action.KEEP and self.matcher.allowed_at(hit, path)
                if not kept_here:
                    origin = min(hit.origins)
                    raise Refused(f"verify: an original value of {origin} is still in the output ({path})")
            if (
                rule is not None
                and rule.action is Action.CLEAN
                and rule.text is not TextMode.WORDS
                and vr not in ("CS", "DA", "DT", "TM", "UI", "DS", "IS", "AS")
                and scrub_spans(folded)
            ):
                raise Refused(f"verify: cleaned text still holds a date, age, number or address ({path})")

    def _engine_wrote(self, value: str, tag: int, top: bool) -> bool:
        if value in DUMMY_STRINGS:
            return True
        if top and self.pseudonyms.get(tag) == value:
            return True
        return top and tag in _RECORD and value in self.record

