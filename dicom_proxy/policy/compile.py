"""Compile Table E.1-1 + options + site overrides into one frozen `Policy` (PS3.15 E.1, E.3)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from dicom_proxy.policy.actions import Action, parse_action
from dicom_proxy.policy.model import Policy, PrivateKey, Rule, TextMode
from dicom_proxy.policy.options import Option
from dicom_proxy.policy.special import SPECIAL_RULES

# Values of these attributes identify a person, place or record. PS3.15 E.3.5 (Clean
# Descriptors) asks that such values be removed from free text; verify searches for them.
_IDENTIFYING = re.compile(
    r"(?<!U)IDs?$|AccessionNumber|Address|Telephone|InstitutionName|InstitutionalDepartmentName"
    r"|StationName|SerialNumber|EMail|Residence|MedicalRecordLocator|MilitaryRank|BranchOfService"
    # Order, procedure, specimen, container and admission numbers (issue 9 class 3).
    r"|OrderNumber|Identifier$|AdmissionID|VisitID|ServiceEpisodeID|ReferencedPatientAlias"
)

# Attributes that Table E.1-1 does not list, that carry text, and that IODs require (Type 1/2)
# or that carry codes: they are cleaned (identifying words removed) instead of removed, so the
# output stays a valid object (PS3.3). Reviewed against the pydicom example files (dciodvfy).
REQUIRED_UNLISTED_TEXT = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "PositionReferenceIndicator",
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "CodingSchemeName",
        "CodingSchemeResponsibleOrganization",
        "BeamName",
        "RescaleType",
        "WindowCenterWidthExplanation",
        "LUTExplanation",
        "ReceiveCoilName",
        "TransmitCoilName",
        "SequenceName",
        "ContentDescription",
        "ConvolutionKernel",
        "FilterType",
        "ContrastBolusRoute",
        "DoseComment",
        "FractionGroupDescription",
        "ROIObservationLabel",
        "ApplicationSetupName",
        "ToleranceTableLabel",
        "PrimaryDosimeterUnit",
        "BrachyTreatmentType",
        "SourceIsotopeName",
        "TreatmentMachineName",
        "GraphicLayer",
        "ImagerPixelSpacing",
        "MeasurementUnitsCodeSequence",
        "DetectorManufacturerName",
        "DetectorManufacturerModelName",
        "RadiopharmaceuticalRoute",
        "Radiopharmaceutical",
        "CollimatorType",
        "ReconstructionMethod",
        "AcquisitionDeviceProcessingCode",
        "LossyImageCompressionMethod",
        "SegmentLabel",
        "SegmentAlgorithmName",
        "SegmentDescription",
        "ContentLabel",
        "ROIObservationDescription",
        "ChannelLabel",
        "ConceptNameCodeSequence",
    }
)

_CODE_KEYWORDS = frozenset(
    {"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "LongCodeValue", "URNCodeValue"}
)

# VRs that cannot carry free text (PS3.5 6.2): numbers, tags and binary data such as Pixel
# Data and LUTs. Binary private/unknown data is handled as UN (removed).
_NON_TEXT_VRS = (
    "US",
    "SS",
    "UL",
    "SL",
    "UV",
    "SV",
    "FL",
    "FD",
    "DS",
    "IS",
    "AT",
    "OB",
    "OW",
    "OF",
    "OD",
    "OL",
    "OV",
    "OB or OW",
    "US or SS",
    "US or OW",
    "US or SS or OW",
)
_TEXT_VRS = ("AE", "AS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN")
# VRs whose action C cleans text (show-policy prints the text mode of their rules).
TEXT_VRS = frozenset(("", "CS", *_TEXT_VRS))
_DATE_VRS = ("DA", "DT", "TM")

_SAFE_PRIVATE_VRS_KEEP = frozenset(_NON_TEXT_VRS)


@cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files("dicom_proxy.policy").joinpath("data", name).read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def table_rows() -> list[dict[str, Any]]:
    """The shipped Table E.1-1 rows (see data/README.md for the edition and generator)."""
    rows: list[dict[str, Any]] = _load("table_e1_1.json")["rows"]
    return rows


def safe_private_rows() -> list[dict[str, Any]]:
    """The shipped Table E.3.10-1 rows (Retain Safe Private Option, PS3.15 E.3.10)."""
    rows: list[dict[str, Any]] = _load("safe_private.json")["rows"]
    return rows


def edition() -> str:
    return str(_load("table_e1_1.json")["edition"])


def parse_tag(text: str) -> int:
    """ "(0008,0050)" or "0008,0050" or "00080050" -> 0x00080050; ValueError otherwise."""
    digits = text.strip().strip("()").replace(",", "")
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", digits):
        raise ValueError(f"not a tag: {text!r}")
    return int(digits, 16)


def row_rule(row: dict[str, Any], options: Iterable[Option]) -> Rule:
    """The rule for one Table E.1-1 row with `options` switched on.

    An option's non-blank cell replaces the Basic Profile cell (PS3.15 E.3). When several
    chosen options fill the same row, the strictest cell wins (e.g. Retain Device Identity K
    and Retain Longitudinal Modified Dates C on a calibration date: the date is shifted).
    """
    cells = [(option, row["options"][option.value]) for option in options if option.value in row["options"]]
    if cells:
        resolved = [(option, *parse_action(code)) for option, code in cells]
        option, action, _ = max(resolved, key=lambda item: item[1].strictness)
        why = f"option {option.value} {action.value}"
        if len(cells) > 1:
            others = ", ".join(f"{o.value} {c}" for o, c in cells)
            why = f"options {others}: strictest {action.value}"
    else:
        action, how = parse_action(row["basic"])
        why = f"basic profile {how}"
    tag = 0 if row["pattern"] else parse_tag(row["tag"])
    identifying = row["vr"] == "PN" or bool(_IDENTIFYING.search(row["keyword"]))
    text = TextMode.WORDS if row["vr"] == "CS" else TextMode.CLEAN
    return Rule(tag, row["name"], row["keyword"], row["vr"], action, why, identifying, text)


def _unlisted_rules(options: frozenset[Option], unlisted: Literal["remove", "keep"]) -> dict[str, Rule]:
    """Rules by VR for public attributes that Table E.1-1 does not list (see data/README.md)."""

    def rule(vr: str, action: Action, why: str) -> Rule:
        return Rule(0, "(not in Table E.1-1)", "", vr, action, why)

    result: dict[str, Rule] = {}
    for vr in _NON_TEXT_VRS:
        result[vr] = rule(vr, Action.KEEP, f"unlisted: VR {vr} cannot carry text")
    result["SQ"] = rule("SQ", Action.KEEP, "unlisted sequence: items processed by the same policy")
    result["CS"] = Rule(
        0,
        "(not in Table E.1-1)",
        "",
        "CS",
        Action.CLEAN,
        "unlisted code string: identifying terms removed",
        text=TextMode.WORDS,
    )
    uid = Action.KEEP if Option.RETAIN_UIDS in options else Action.REPLACE_UID
    result["UI"] = rule(
        "UI",
        uid,
        "unlisted UID: well-known UIDs kept, others remapped"
        if uid is Action.REPLACE_UID
        else "unlisted UID: option retain_uids K",
    )
    if Option.RETAIN_LONGITUDINAL_FULL_DATES in options:
        dates = (Action.KEEP, Action.KEEP, "unlisted date/time: option retain_longitudinal_full_dates K")
    elif Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
        dates = (Action.CLEAN, Action.KEEP, "unlisted date/time: option retain_longitudinal_modified_dates C")
    else:
        dates = (Action.REMOVE, Action.REMOVE, "unlisted date/time: removed like Table E.1-1 dates")
    result["DA"] = rule("DA", dates[0], dates[2])
    result["DT"] = rule("DT", dates[0], dates[2])
    result["TM"] = rule("TM", dates[1], dates[2])
    for vr in _TEXT_VRS:
        result[vr] = rule(vr, Action.REMOVE, f"unlisted: VR {vr} can carry free text")
    if unlisted == "keep":
        for vr, existing in list(result.items()):
            if existing.action in (Action.REMOVE, Action.CLEAN):
                result[vr] = rule(vr, Action.KEEP, 'unlisted: kept (unlisted_attributes = "keep")')
    return result


def _required_text_rules(options: frozenset[Option]) -> dict[int, Rule]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    rules: dict[int, Rule] = {}
    for keyword in sorted(REQUIRED_UNLISTED_TEXT):
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = dictionary_VR(tag)
        if keyword in _CODE_KEYWORDS:
            why, text = "unlisted: coded value (PS3.3 8.8), identifying terms removed", TextMode.WORDS
        elif Option.CLEAN_DESCRIPTORS in options:
            why, text = "unlisted, needed by IODs: option clean_descriptors C", TextMode.CLEAN
        else:
            # Without Clean Descriptors, text not known to be safe must go (PS3.15 E.1.1):
            # only descriptor vocabulary words stay, a dummy where nothing does.
            why, text = "unlisted, needed by IODs: descriptor words only (no clean_descriptors)", TextMode.ALLOWLIST
        if keyword == "CodeMeaning":
            why = "known code (DCM, SCT... dictionaries): its standard meaning; otherwise " + why
        rules[tag] = Rule(tag, keyword, keyword, vr, Action.CLEAN, why, text=text)
    # SR TEXT content items (PS3.3 C.17.3): Content Sequence is D in the Basic Profile, so its
    # free text gets a dummy; Clean Structured Content (E.3.7) cleans it instead.
    tag = 0x0040A160
    if Option.CLEAN_STRUCTURED_CONTENT in options:
        rules[tag] = Rule(
            tag, "Text Value", "TextValue", "UT", Action.CLEAN, "content item text: option clean_structured_content C"
        )
    else:
        rules[tag] = Rule(
            tag, "Text Value", "TextValue", "UT", Action.DUMMY, "content item text: like Content Sequence D"
        )
    return rules


def _safe_private_rules(options: frozenset[Option]) -> dict[PrivateKey, Rule]:
    if Option.RETAIN_SAFE_PRIVATE not in options:
        return {}
    rules: dict[PrivateKey, Rule] = {}
    for row in safe_private_rows():
        group, element = int(row["group"], 16), int(row["element"], 16)
        vr = row["vr"]
        why = "option retain_safe_private C (Table E.3.10-1)"
        action = Action.KEEP if vr in _SAFE_PRIVATE_VRS_KEEP else Action.CLEAN
        if vr == "UI":
            action = Action.KEEP if Option.RETAIN_UIDS in options else Action.REPLACE_UID
        name = f"{row['meaning'][:60]} [{row['private_creator']}]"
        rules[(row["private_creator"], group, element)] = Rule(
            (group << 16) | element, name, "", vr, action, f"{why}: {action.value} for VR {vr or '?'}"
        )
    return rules


def compile_policy(
    option_names: Iterable[str],
    overrides_file: Path | None = None,
    unlisted: Literal["remove", "keep"] = "remove",
    text: Literal["clean", "allowlist"] = "clean",
) -> Policy:
    """Build the Policy for the chosen options (names of `Option`) and an optional override file.

    Raises ValueError for an unknown option name and ConfigError for a bad override file.
    """
    wanted = {Option(name) for name in option_names}
    options = tuple(option for option in Option if option in wanted)
    chosen = frozenset(options)
    rules: dict[int, Rule] = _required_text_rules(chosen)
    patterns: dict[str, Rule] = {}
    for row in table_rows():
        rule = row_rule(row, options)
        if row["pattern"]:
            patterns[row["pattern"]] = rule
        else:
            rules[rule.tag] = rule
    patterns["curve"] = _with_tag(patterns["curve"], 0x50000000)
    patterns["overlay_data"] = _with_tag(patterns["overlay_data"], 0x60003000)
    patterns["overlay_comments"] = _with_tag(patterns["overlay_comments"], 0x60004000)
    private_default = _with_tag(patterns["private"], 0x00090000)
    if private_default.action is not Action.REMOVE:
        # The "C" of Retain Safe Private applies to the attributes of Table E.3.10-1 only;
        # every other private attribute is still removed.
        private_default = Rule(
            0x00090000,
            "Private Attributes (not in Table E.3.10-1)",
            "",
            "",
            Action.REMOVE,
            "basic profile X (not a safe private attribute)",
        )
    policy = Policy(
        edition=edition(),
        options=options,
        rules=MappingProxyType(rules),
        curve=patterns["curve"],
        overlay_data=patterns["overlay_data"],
        overlay_comments=patterns["overlay_comments"],
        private_default=private_default,
        private_rules=MappingProxyType(_safe_private_rules(chosen)),
        unlisted_by_vr=MappingProxyType(_unlisted_rules(chosen, unlisted)),
        unlisted_attributes=unlisted,
        special=SPECIAL_RULES,
        text_mode=text,
    )
    if overrides_file is not None:
        from dicom_proxy.policy.overrides import apply_overrides

        policy = apply_overrides(policy, overrides_file)
    if text == "allowlist":
        policy = _allowlist(policy)
    return policy


def _allowlist(policy: Policy) -> Policy:
    """text = "allowlist": every action C on free text keeps descriptor words only."""

    def strict(rule: Rule) -> Rule:
        if rule.action is Action.CLEAN and rule.text is TextMode.CLEAN:
            return dataclasses.replace(rule, text=TextMode.ALLOWLIST, why=rule.why + "; text = allowlist")
        return rule

    return dataclasses.replace(
        policy,
        rules=MappingProxyType({tag: strict(rule) for tag, rule in policy.rules.items()}),
        private_rules=MappingProxyType({key: strict(rule) for key, rule in policy.private_rules.items()}),
        unlisted_by_vr=MappingProxyType({vr: strict(rule) for vr, rule in policy.unlisted_by_vr.items()}),
        special=tuple(strict(rule) for rule in policy.special),
    )


def _with_tag(rule: Rule, tag: int) -> Rule:
    return dataclasses.replace(rule, tag=tag)
