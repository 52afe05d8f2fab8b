"""Site overrides: a TOML file of per-attribute actions applied on top of the profile.

```toml
allow_weaker = false            # default: an override may only make the policy stricter
[attributes]                    # public attributes, by keyword or tag
PatientSex = "X"
"(0008,1030)" = "X"
"(60xx,3000)" = "X"             # the repeating-group rows use the table's own tag text
[private."SIEMENS CSA HEADER"]  # private attributes, by creator, then "(gggg,xxee)"
"(0029,xx10)" = "X"
```

Stricter means removing more of the value: X > Z = D > U > C > K (`Action.strictness`).
Every problem is reported with its key path (ConfigError), all at once.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicom_proxy.config import ConfigError, read_toml
from dicom_proxy.policy.actions import Action, parse_action
from dicom_proxy.policy.model import Policy, PrivateKey, Rule

_PATTERN_ATTRS = {"(50xx,xxxx)": "curve", "(60xx,3000)": "overlay_data", "(60xx,4000)": "overlay_comments"}
_PRIVATE_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),\s*[xX]{2}([0-9A-Fa-f]{2})\)?$")


def apply_overrides(policy: Policy, path: Path) -> Policy:
    """Return `policy` with the overrides of `path` applied; raise ConfigError on any problem."""
    prefix = f"deidentify.overrides_file ({path})"
    raw = read_toml(path, prefix)
    problems: list[str] = []
    for key in sorted(set(raw) - {"allow_weaker", "attributes", "private"}):
        problems.append(f"{prefix}: {key}: unknown key")
    allow_weaker = raw.get("allow_weaker", False)
    if not isinstance(allow_weaker, bool):
        problems.append(f"{prefix}: allow_weaker: must be true or false")
        allow_weaker = False
    builder = _Builder(policy, allow_weaker, prefix, problems)
    builder.public(_table(raw, "attributes", prefix, problems))
    builder.private(_table(raw, "private", prefix, problems))
    if problems:
        raise ConfigError(problems)
    return builder.result()


def _table(raw: dict[str, Any], key: str, prefix: str, problems: list[str]) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{prefix}: {key}: must be a table")
        return {}
    return value


class _Builder:
    def __init__(self, policy: Policy, allow_weaker: bool, prefix: str, problems: list[str]) -> None:
        self.policy = policy
        self.allow_weaker = allow_weaker
        self.prefix = prefix
        self.problems = problems
        self.rules = dict(policy.rules)
        self.patterns: dict[str, Rule] = {}
        self.private_rules = dict(policy.private_rules)
        self.count = 0

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{self.prefix}: {key}: {message}")

    def action(self, key: str, value: Any, current: Rule, vr: str) -> Action | None:
        if not isinstance(value, str):
            self.fail(key, "must be an action code string (X, Z, D, K, C, U)")
            return None
        try:
            action, _ = parse_action(value)
        except ValueError:
            self.fail(key, f"unknown action {value!r}; use X, Z, D, K, C or U")
            return None
        if action is Action.REPLACE_UID and vr not in ("UI", "SQ", ""):
            self.fail(key, f"U applies to UIDs only (VR of this attribute: {vr})")
            return None
        if action.strictness < current.action.strictness and not self.allow_weaker:
            self.fail(
                key,
                f"{action.value} is weaker than the policy's {current.action.value} ({current.why}); "
                "set allow_weaker = true to permit",
            )
            return None
        return action

    def public(self, table: dict[str, Any]) -> None:
        for key, value in table.items():
            path = f"attributes.{key}"
            if key in _PATTERN_ATTRS:
                name = _PATTERN_ATTRS[key]
                current: Rule = getattr(self.policy, name)
                action = self.action(path, value, current, "")
                if action is not None:
                    self.patterns[name] = _overridden(current, action)
                continue
            tag = _public_tag(key)
            if tag is None:
                self.fail(path, 'not a DICOM keyword or public tag "(gggg,eeee)"')
                continue
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = self.rules[tag].vr if tag in self.rules else "UN"
            current = self.rules.get(tag) or self.policy.unlisted(vr)
            action = self.action(path, value, current, vr)
            if action is None:
                continue
            if tag not in self.rules:
                keyword = keyword_for_tag(tag)
                current = Rule(tag, keyword or key, keyword, vr, current.action, current.why)
            self.rules[tag] = _overridden(current, action)

    def private(self, table: dict[str, Any]) -> None:
        for creator, entries in table.items():
            if not isinstance(entries, dict):
                self.fail(f"private.{creator}", 'must be a table of "(gggg,xxee)" = action')
                continue
            for key, value in entries.items():
                path = f"private.{creator}.{key}"
                match = _PRIVATE_TAG.match(key)
                if match is None or not int(match.group(1), 16) % 2:
                    self.fail(path, 'not a private tag "(gggg,xxee)" with an odd group')
                    continue
                group, element = int(match.group(1), 16), int(match.group(2), 16)
                pkey: PrivateKey = (creator, group, element)
                current = self.private_rules.get(pkey) or self.policy.private_default
                action = self.action(path, value, current, current.vr)
                if action is None:
                    continue
                name = f"{key} [{creator}]"
                base = Rule((group << 16) | element, name, "", current.vr, current.action, current.why)
                self.private_rules[pkey] = _overridden(base, action)

    def result(self) -> Policy:
        self.count = len(self.problems)
        return dataclasses.replace(
            self.policy,
            rules=MappingProxyType(self.rules),
            private_rules=MappingProxyType(self.private_rules),
            overrides_applied=1,
            **self.patterns,  # type: ignore[arg-type]
        )


def _public_tag(key: str) -> int | None:
    tag = tag_for_keyword(key)
    if tag is not None:
        return int(tag)
    digits = key.strip().strip("()").replace(",", "")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", digits) and int(digits[:4], 16) % 2 != 1:
        return int(digits, 16)
    return None


def _overridden(rule: Rule, action: Action) -> Rule:
    why = f"override {action.value} (was {rule.action.value}: {rule.why})"
    return dataclasses.replace(rule, action=action, why=why)
