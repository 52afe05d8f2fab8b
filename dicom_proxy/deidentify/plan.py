"""Stage 1, plan: read the original header before anything changes it.

Collects (PS3.15 E.3.5) the words of identifying values for cleaning text, the original
identifying strings that verify searches for, and the patient's date offset (E.3.6).
"""

from __future__ import annotations

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_proxy.deidentify import pseudonyms
from dicom_proxy.deidentify.context import Context
from dicom_proxy.deidentify.lookup import cheap_elements, converted, rule_for
from dicom_proxy.deidentify.text import identifier_words
from dicom_proxy.deidentify.uids import is_well_known
from dicom_proxy.policy import Action, Policy

_SEARCHED_VRS = frozenset({"DA", "DT", "UI"})
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA", "DT", "TM", "UI", "AS"})


def make_plan(dataset: Dataset, policy: Policy, key: bytes) -> Context:
    """Build the per-object Context from the original `dataset` (not modified)."""
    context = Context(policy, key, convert_encodings(dataset.get("SpecificCharacterSet")))
    words: set[str] = set()
    _walk(dataset, context, words, "")
    context.identifiers = frozenset(words)
    context.needles = {n: p for n, p in context.needles.items() if n.casefold() not in context.kept}
    context.date_offset = pseudonyms.date_offset_days(key, patient_identity(dataset))
    return context


def patient_identity(dataset: Dataset) -> str:
    """The string the patient's pseudonyms derive from: issuer + Patient ID (DESIGN.md)."""
    issuer = str(dataset.get("IssuerOfPatientID", "") or "")
    patient_id = str(dataset.get("PatientID", "") or "")
    if not patient_id.strip():
        # No ID: fall back to name + birth date so one patient still gets one offset.
        patient_id = f"{dataset.get('PatientName', '')}|{dataset.get('PatientBirthDate', '')}"
    return f"{issuer.strip()}\x00{patient_id.strip()}"


def _walk(dataset: Dataset, context: Context, words: set[str], prefix: str) -> None:
    policy = context.policy
    for raw, vr in cheap_elements(dataset):
        if vr != "SQ" and vr not in _TEXT_VRS:
            continue  # numbers and binary carry no identifying text: not even converted
        element = converted(dataset, raw)
        vr = element.VR
        if vr == "SQ":
            for index, item in enumerate(element.value or ()):
                _walk(item, context, words, f"{prefix}{_name(element)}[{index}].")
            continue
        if vr not in _TEXT_VRS or element.value is None:
            continue
        rule = rule_for(policy, dataset, element)
        values = _strings(element.value)
        if rule.action is Action.KEEP:
            context.kept.update(value.casefold() for value in values)
            continue
        if rule.identifying or vr == "PN":
            for value in values:
                words.update(identifier_words(value))
        if rule.identifying or vr == "PN" or vr in _SEARCHED_VRS:
            path = prefix + _name(element)
            for value in values:
                if vr == "UI" and is_well_known(value):
                    continue
                _add_needles(context, value, vr, path)


def _add_needles(context: Context, value: str, vr: str, path: str) -> None:
    parts = [value]
    if vr == "PN":
        parts += value.replace("=", "^").split("^")
    for part in parts:
        part = part.strip()
        if part:
            context.needles.setdefault(part, path)


def _strings(value: object) -> list[str]:
    if isinstance(value, (list, MultiValue)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    text = str(value).strip()
    return [text] if text else []


def _name(element: DataElement) -> str:
    tag = element.tag
    return element.keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
