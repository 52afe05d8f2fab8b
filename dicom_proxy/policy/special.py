"""Rules the engine applies besides the rows of Table E.1-1 and E.3.10-1, in one place, so
that `show-policy` shows every rule the engine can apply (resolve.py picks them)."""

from __future__ import annotations

from dicom_proxy.policy.actions import Action
from dicom_proxy.policy.model import Rule

GROUP_LENGTH = Rule(0, "Group Length (gggg,0000)", "", "UL", Action.REMOVE, "group lengths are recomputed (PS3.5 7.2)")
PRIVATE_CREATOR = Rule(
    0, "Private Creator (gggg,0010-00FF)", "", "LO", Action.KEEP, "kept while its block keeps an element (PS3.5 7.8.1)"
)
OVERLAY_PLANE = Rule(
    0x60000000,
    "Overlay Plane attributes (60xx,xxxx)",
    "",
    "",
    Action.REMOVE,
    "go with Overlay Data (PS3.3 C.9.2); kept when the pixel stage cleaned the overlays",
)
# A safe private attribute (Table E.3.10-1) whose value does not have the listed, non-text VR
# is only safe after cleaning (PS3.15 E.3.10: "...only when their value is safe").
SAFE_PRIVATE_TEXT = Rule(
    0, "Safe private attribute with a text value", "", "", Action.CLEAN, "retain_safe_private: text value cleaned"
)
SAFE_PRIVATE_UNKNOWN = Rule(
    0,
    "Safe private attribute of unknown or contradicting VR",
    "",
    "UN",
    Action.REMOVE,
    "retain_safe_private: value cannot be checked",
)
MISMATCHED_VR = Rule(
    0,
    "Attribute with a VR its definition does not allow",
    "",
    "",
    Action.REMOVE,
    "declared VR contradicts the data dictionary: content cannot be checked",
)
# Done by the tag stage on top of the action of the attribute's row.
PATIENT_PSEUDONYM = Rule(
    0x00100020,
    "Patient ID, Patient's Name",
    "",
    "",
    Action.DUMMY,
    "keyed pseudonym of the patient's identity (issuer + ID; without ID: name + "
    "birth date + sex), when their row replaces the value",
)
AGE_OVER_89 = Rule(
    0x00101010,
    "Age String values over 089Y (any AS attribute)",
    "",
    "AS",
    Action.CLEAN,
    "a kept age over 89 years becomes 090Y (HIPAA Safe Harbor 164.514(b)(2)(i)(C))",
)
DECIMAL_COMMA = Rule(
    0,
    "Decimal String with a decimal comma",
    "",
    "DS",
    Action.CLEAN,
    '"2,5" is written "2.5" (unambiguous: one comma between digits), else refused',
)
LEGACY_UID = Rule(
    0,
    "UID with a leading-zero component (retain_uids)",
    "",
    "UI",
    Action.CLEAN,
    "kept UIDs: leading zeros dropped from components (PS3.5 9.1); invalid otherwise refused",
)
DEIDENTIFICATION_RECORD = Rule(
    0x00120062,
    "Patient Identity Removed, De-identification Method (Code Sequence)",
    "",
    "",
    Action.DUMMY,
    "written by the engine (PS3.15 E.1.1, PS3.3 C.7.1.1)",
)

SPECIAL_RULES: tuple[Rule, ...] = (
    GROUP_LENGTH,
    PRIVATE_CREATOR,
    OVERLAY_PLANE,
    SAFE_PRIVATE_TEXT,
    SAFE_PRIVATE_UNKNOWN,
    MISMATCHED_VR,
    PATIENT_PSEUDONYM,
    AGE_OVER_89,
    DECIMAL_COMMA,
    LEGACY_UID,
    DEIDENTIFICATION_RECORD,
)
