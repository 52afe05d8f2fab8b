"""The de-identification policy: PS3.15 Table E.1-1 as shipped data, the options of E.3 and
site overrides, compiled once into one frozen `Policy` (dict lookups by tag)."""

from __future__ import annotations

from dicom_proxy.policy.actions import Action, parse_action
from dicom_proxy.policy.compile import TEXT_VRS, compile_policy, safe_private_rows, table_rows
from dicom_proxy.policy.model import Policy, PrivateKey, Rule, TextMode
from dicom_proxy.policy.options import BASIC_PROFILE, CLEAN_PIXEL_DATA, Code, Option

__all__ = [
    "BASIC_PROFILE",
    "CLEAN_PIXEL_DATA",
    "Action",
    "Code",
    "Option",
    "Policy",
    "PrivateKey",
    "Rule",
    "TextMode",
    "compile_policy",
    "format_policy",
    "parse_action",
    "safe_private_rows",
    "table_rows",
]


def format_policy(policy: Policy) -> str:
    """One line per attribute: tag, name, action, why (for ``dicom-proxy show-policy``)."""
    lines = [
        f"# PS3.15 Table E.1-1, edition {policy.edition}; options: "
        + (", ".join(o.value for o in policy.options) or "(none)"),
        f"# unlisted attributes: {policy.unlisted_attributes}; text: {policy.text_mode}",
    ]

    def line(tag: str, rule: Rule) -> str:
        text = f" [text {rule.text.value}]" if rule.action is Action.CLEAN and rule.vr in TEXT_VRS else ""
        return f"{tag:<13} {rule.name[:60]:<60} {rule.action.value}  {rule.why}{text}"

    for tag in sorted(policy.rules):
        lines.append(line(policy.rules[tag].tag_text, policy.rules[tag]))
    lines.append(line("(50xx,xxxx)", policy.curve))
    lines.append(line("(60xx,3000)", policy.overlay_data))
    lines.append(line("(60xx,4000)", policy.overlay_comments))
    for key in sorted(policy.private_rules):
        creator, group, element = key
        lines.append(line(f"({group:04X},xx{element:02X}) {creator}", policy.private_rules[key]))
    lines.append(line("(odd group)", policy.private_default))
    for vr in sorted(policy.unlisted_by_vr):
        lines.append(line(f"unlisted {vr}", policy.unlisted_by_vr[vr]))
    lines.append("# rules the engine applies besides the table rows (policy/special.py)")
    for rule in policy.special:
        lines.append(line("(engine)", rule))
    return "\n".join(lines) + "\n"
