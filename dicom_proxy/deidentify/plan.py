"""Stage 1, plan: read the original header before anything changes it.

Derives the patient's identity once (pseudonyms.PatientIdentity) and its date offset (PS3.15
E.3.6), and collects (E.3.5) every identifying value with the attribute path where it was
found: names (PN, and attributes whose definition is PN whatever VR the sender declared),
identifiers (IDs, accession, order, specimen and admission numbers, addresses...), dates and
UIDs. Clean removes them from text; verify searches the output for them.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_proxy.deidentify import pseudonyms
from dicom_proxy.deidentify.context import Context
from dicom_proxy.deidentify.text import Identifiers, TextCleaner, Vocabulary
from dicom_proxy.deidentify.uids import is_well_known
from dicom_proxy.dictionary import attribute_name, definition_vr
from dicom_proxy.policy import Action, Policy, Rule
from dicom_proxy.policy.resolve import cheap_elements, converted, rule_for

_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA", "DT", "TM", "UI", "AS", "UN"})


def make_plan(dataset: Dataset, policy: Policy, key: bytes, vocabulary: Vocabulary) -> Context:
    """Build the per-object Context from the original `dataset` (values not modified)."""
    identifiers = Identifiers()
    _walk(dataset, policy, identifiers, vocabulary.words, "")
    patient = pseudonyms.PatientIdentity.of(dataset)
    matcher = identifiers.matcher()
    return Context(
        policy, key, patient, matcher, TextCleaner(matcher, vocabulary), pseudonyms.date_offset_days(key, patient)
    )


def _walk(dataset: Dataset, policy: Policy, identifiers: Identifiers, vocabulary: frozenset[str], prefix: str) -> None:
    for raw, vr in cheap_elements(dataset):
        if vr != "SQ" and vr not in _TEXT_VRS and definition_vr(int(raw.tag)) not in ("PN", "SQ"):
            continue  # numbers and binary carry no identifying text: not even converted
        if vr != "SQ" and isinstance(raw, RawDataElement) and raw.VR == vr and not _kind(policy, int(raw.tag), vr):
            continue  # its declared VR stands and says "not identifying": nothing to collect
        element = converted(dataset, raw)
        path = prefix + element_path(element)
        if element.VR == "SQ":
            for index, item in enumerate(element.value or ()):
                _walk(item, policy, identifiers, vocabulary, f"{path}[{index}].")
            continue
        values = _strings(element.value)
        if not values:
            continue
        kind = _kind(policy, int(element.tag), str(element.VR))
        if kind and rule_for(policy, dataset, element).action is Action.KEEP:
            identifiers.kept.add(path)
        for value in values:
            if kind == "name":
                identifiers.add_name(value, path)
            elif kind == "identifier":
                identifiers.add_identifier(value, path, vocabulary)
            elif kind == "value" and not (element.VR == "UI" and is_well_known(value)):
                identifiers.add_value(value, path)
                if element.VR == "DT" and len(value) > 8:
                    identifiers.add_value(value[:8], path)


def _kind(policy: Policy, tag: int, vr: str) -> str:
    """ "name", "identifier", "value" (dates, UIDs: searched whole) or "" (not identifying).

    Decided by the attribute's definition, not by the VR the sender declared: Patient's Name
    sent as LO is still a name."""
    definition = definition_vr(tag)
    if vr == "PN" or definition == "PN":
        return "name"
    rule: Rule | None = policy.rules.get(tag)
    if rule is not None and rule.identifying:
        return "identifier"
    if vr in ("DA", "DT", "UI") or definition in ("DA", "DT", "UI"):
        return "value"
    return ""



def element_path(element: DataElement) -> str:
    """The name of `element` in attribute paths (plan's origins, verify's places)."""
    return attribute_name(int(element.tag))


def _strings(value: object) -> list[str]:
    if isinstance(value, bytes):
        return []
    if isinstance(value, (list, MultiValue)):
        return [str(v).strip(" \x00") for v in value if v is not None and str(v).strip(" \x00")]
    text = str(value).strip(" \x00") if value is not None else ""
    return [text] if text else []
