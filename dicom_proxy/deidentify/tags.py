"""Stage 3, tags: apply the compiled policy to every attribute at every nesting level.

One handler per action of PS3.15 Table E.1-1 (E.1.1); the VR decides how an action is done.
Sequences that are kept (K, C, D, U on a sequence) keep their items, and the items go through
the same policy, so nothing nested escapes (PS3.15 E.1.1: "...applies to all Attributes in
Sequences").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_proxy.deidentify import pseudonyms
from dicom_proxy.deidentify.context import Context
from dicom_proxy.deidentify.dates import shift_da, shift_dt
from dicom_proxy.deidentify.text.codes import standard_meaning
from dicom_proxy.deidentify.uids import map_uid, normalise_legacy_uid
from dicom_proxy.deidentify.values import dummy_value
from dicom_proxy.dictionary import attribute_name
from dicom_proxy.models import Refused
from dicom_proxy.policy import Action, Rule, TextMode
from dicom_proxy.policy.resolve import cheap_elements, converted, rule_for
from dicom_proxy.policy.special import OVERLAY_PLANE, PRIVATE_CREATOR

_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010
_CODE_MEANING = 0x00080104
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})
_NON_TEXT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "AT", "US or SS"})

Handler = Callable[[Dataset, DataElement, Context, Rule], None]


def apply_tags(dataset: Dataset, context: Context, overlays_cleaned: bool = False) -> None:
    """Apply `context.policy` to `dataset` in place, recursively."""
    policy = context.policy
    kept_blocks: set[tuple[int, int]] = set()
    creators: list[int] = []
    for raw, vr in cheap_elements(dataset):
        rule = rule_for(policy, dataset, raw, vr)
        tag = int(raw.tag)
        if rule is PRIVATE_CREATOR:
            creators.append(tag)
            continue
        if overlays_cleaned and (rule is policy.overlay_data or rule is OVERLAY_PLANE):
            # Hook for the pixel stage: overlays it cleaned are kept as they are.
            continue
        if rule.action is Action.REMOVE:
            del dataset[tag]
            continue
        # A kept number or binary value stays as it came, unconverted if it was never read.
        if rule.action is not Action.KEEP or vr == "SQ":
            _HANDLERS[rule.action](dataset, converted(dataset, raw), context, rule)
        elif vr in _DECIMAL_STRING_VRS and isinstance(raw, RawDataElement):
            _check_number_string(dataset, raw)
        elif vr == "AS":
            _cap_age(converted(dataset, raw))
        elif vr == "UI":
            _normalise_uids(converted(dataset, raw))
        if tag >> 16 & 1 and tag in dataset:
            kept_blocks.add((tag >> 16, (tag & 0xFFFF) >> 8))
    for tag in creators:
        if (tag >> 16, tag & 0xFF) not in kept_blocks:
            del dataset[tag]


# DS and IS are numbers written as text (PS3.5 6.2): a kept raw value must hold nothing else.
_DECIMAL_STRING_VRS = frozenset({"DS", "IS"})
_NUMBER_STRING = re.compile(rb"[0-9+\-.eE \\\x00]*")
# A decimal comma: one comma between digits, nothing else unusual (policy/special.py).
_DECIMAL_COMMA = re.compile(rb" *[+-]?\d+,\d+(?:[eE][+-]?\d+)? *")


def _check_number_string(dataset: Dataset, raw: RawDataElement) -> None:
    if not raw.value or _NUMBER_STRING.fullmatch(raw.value):
        return
    if raw.VR in ("DS", None) and all(
        _NUMBER_STRING.fullmatch(v) or _DECIMAL_COMMA.fullmatch(v) for v in bytes(raw.value).split(b"\\")
    ):
        fixed = b"\\".join(
            v.replace(b",", b".") if _DECIMAL_COMMA.fullmatch(v) else v for v in bytes(raw.value).split(b"\\")
        )
        dataset[raw.tag] = raw._replace(value=fixed)
        return
    keyword = attribute_name(int(raw.tag))
    raise Refused(f"{keyword}: {raw.VR or 'DS/IS'} value is not a number")


def _cap_age(element: DataElement) -> None:
    """HIPAA Safe Harbor: ages over 89 are aggregated into 90 or older (policy/special.py)."""
    values = [str(v) for v in _as_list(element.value) if v is not None]
    capped = ["090Y" if re.fullmatch(r"\s*\d{3}Y\s*", v) and int(v.strip()[:3]) > 89 else v for v in values]
    if capped != values:
        element.value = capped if len(capped) != 1 else capped[0]


def _normalise_uids(element: DataElement) -> None:
    """Kept UIDs with leading-zero components, written validly (policy/special.py)."""
    if element.VR != "UI" or element.value is None:
        return
    values = [str(v) for v in _as_list(element.value)]
    fixed = [normalise_legacy_uid(v) for v in values]
    if fixed != values:
        element.value = fixed if len(fixed) != 1 else fixed[0]


def _recurse(element: DataElement, context: Context, rule: Rule | None = None) -> None:
    for item in element.value or ():
        apply_tags(item, context)


def _remove(dataset: Dataset, element: DataElement, context: Context, rule: Rule) -> None:
    del dataset[element.tag]


def _zero(dataset: Dataset, element: DataElement, context: Context, rule: Rule) -> None:
    if element.VR == "SQ":
        element.value = []
    elif element.tag in (_PATIENT_ID, _PATIENT_NAME):
        _patient_pseudonym(dataset, element, context)
    else:
        element.value = None


def _dummy(dataset: Dataset, element: DataElement, context: Context, rule: Rule) -> None:
    vr = element.VR
    if vr == "SQ":
        _recurse(element, context)
    elif vr == "UI":
        _replace_uid(dataset, element, context)
    elif element.tag in (_PATIENT_ID, _PATIENT_NAME):
        _patient_pseudonym(dataset, element, context)
    else:
        element.value = dummy_value(vr)


def _keep(dataset: Dataset, element: DataElement, context: Context, rule: Rule) -> None:
    if element.VR == "SQ":
        _recurse(element, context)


def _clean(dataset: Dataset, element: DataElement, context: Context, rule: Rule) -> None:
    vr = element.VR
    if vr == "SQ":
        _recurse(element, context)
    elif vr in ("DA", "DT"):
        _shift_date(dataset, element, context)
    elif vr == "TM":
        if not context.policy.shift_dates:
            element.value = dummy_value(vr)
    elif vr == "UI":
        if not context.policy.retain_uids:
            _replace_uid(dataset, element, context)
    elif vr in _NON_TEXT_VRS:
        return
    elif vr in _BINARY_VRS:
        # Binary data (overlays, curves, unknown VR) cannot be cleaned: fail closed.
        del dataset[element.tag]
    elif vr == "AS":
        _cap_age(element)
    elif element.tag == _CODE_MEANING and _standard_meaning(dataset, element):
        return
    else:
        _clean_strings(element, context, rule)


def _standard_meaning(dataset: Dataset, element: DataElement) -> bool:
    """A known code's Code Meaning becomes its standard meaning (text/codes.py)."""
    scheme, value = dataset.get("CodingSchemeDesignator"), dataset.get("CodeValue")
    meaning = standard_meaning(str(scheme), str(value)) if scheme and value else None
    if meaning is None:
        return False
    element.value = meaning
    return True


def _replace_uid(dataset: Dataset, element: DataElement, context: Context, rule: Rule | None = None) -> None:
    if element.VR != "UI":
        element.value = dummy_value(element.VR)
        return
    value = element.value
    if isinstance(value, (list, MultiValue)):
        element.value = [_uid(str(v), context) for v in value]
    elif value:
        element.value = _uid(str(value), context)


def _uid(value: str, context: Context) -> str:
    return map_uid(context.key, value)


def _shift_date(dataset: Dataset, element: DataElement, context: Context) -> None:
    if not context.policy.shift_dates:
        element.value = dummy_value(element.VR)
        return
    shift = shift_da if element.VR == "DA" else shift_dt
    values = element.value if isinstance(element.value, (list, MultiValue)) else [element.value]
    shifted = []
    for value in values:
        if value is None or not str(value).strip():
            continue
        new = shift(str(value), context.date_offset)
        shifted.append(new if new is not None else dummy_value(element.VR))
    context.dates_shifted = True
    element.value = shifted if len(shifted) != 1 else shifted[0]


def _clean_strings(element: DataElement, context: Context, rule: Rule) -> None:
    value = element.value
    if value is None:
        return
    mode = TextMode.WORDS if element.VR == "CS" and rule.text is TextMode.CLEAN else rule.text
    cleaner = context.cleaner
    originals = [str(v) if v is not None else "" for v in _as_list(value)]
    if element.VR == "PN":
        # A name is made of identifying words only: what survives cleaning is not a name.
        cleaned = [cleaner.clean(v.replace("^", " ").replace("=", " "), mode) for v in originals]
    elif element.VR == "CS":
        cleaned = [v if cleaner.vocabulary.is_code(v) else cleaner.clean(v, mode) for v in originals]
    else:
        cleaned = [cleaner.clean(v, mode) for v in originals]
    # A value cleaned away entirely becomes a dummy, so Type 1 attributes stay valid; an empty
    # value stays empty.
    cleaned = [text if text or not v.strip() else dummy_value(element.VR) for text, v in zip(cleaned, originals)]
    if element.VR == "CS":
        cleaned = [text[:16] for text in cleaned]
    if cleaned == originals:
        return  # nothing to remove: the value stays as it was (setting it again costs pydicom's checks)
    element.value = cleaned if isinstance(value, (list, MultiValue)) else cleaned[0]


def _patient_pseudonym(dataset: Dataset, element: DataElement, context: Context) -> None:
    new_id, new_name = pseudonyms.patient_pseudonyms(context.key, context.patient, context.subject)
    element.value = new_id if element.tag == _PATIENT_ID else new_name


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


_HANDLERS: dict[Action, Handler] = {
    Action.REMOVE: _remove,
    Action.ZERO: _zero,
    Action.DUMMY: _dummy,
    Action.KEEP: _keep,
    Action.CLEAN: _clean,
    Action.REPLACE_UID: lambda ds, el, ctx, rule: _recurse(el, ctx) if el.VR == "SQ" else _replace_uid(ds, el, ctx),
}
