"""Filters: which received objects a profile de-identifies at all, decided on the original
header before de-identification (conditions as in pixel rules, dicom_proxy/conditions.py).

```toml
[[profiles.filters]]
name = "no dose reports"
action = "drop"                 # "accept", "drop" (Success, never stored) or "reject" (failure)
match = { SOPClassUID = ["1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.88.68"] }
```

The first filter whose conditions all match decides; an object no filter matches gets
`filters_default` ("accept" unless configured).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.dataset import Dataset

from dicom_proxy.conditions import Condition, header_values, matches_all, parse_match


class FilterAction(Enum):
    """What happens to an object a filter matches."""

    ACCEPT = "accept"  # de-identify and store it
    DROP = "drop"  # answer Success (the sender did nothing wrong), count and audit, never store
    REJECT = "reject"  # answer a failure status


@dataclass(frozen=True)
class Filter:
    name: str
    action: FilterAction
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class FilterDecision:
    """The action for one object and the filter that chose it (None: `filters_default`)."""

    action: FilterAction
    filter_name: str | None = None


@dataclass(frozen=True)
class FilterSet:
    filters: tuple[Filter, ...] = ()
    default: FilterAction = FilterAction.ACCEPT

    def decide(self, dataset: Dataset) -> FilterDecision:
        """The first matching filter's action, else the default. Reads the header only."""
        if not self.filters:
            return FilterDecision(self.default)
        header = header_values(dataset)
        for entry in self.filters:
            if matches_all(entry.conditions, header):
                return FilterDecision(entry.action, entry.name)
        return FilterDecision(self.default)


_FILTER_KEYS = {"name", "action", "match"}
_ACTIONS = tuple(a.value for a in FilterAction)


def parse_filters(key: str, value: Any, default: Any, problems: list[str]) -> FilterSet:
    """Compile `[[filters]]` entries (at key path `key`) and `filters_default`; append one
    message per problem to `problems`."""
    action_default = FilterAction.ACCEPT
    if default is not None:
        if default not in _ACTIONS:
            problems.append(f"{key}_default: must be one of {', '.join(repr(a) for a in _ACTIONS)}")
        else:
            action_default = FilterAction(default)
    if value is None:
        return FilterSet(default=action_default)
    if not isinstance(value, list):
        problems.append(f"{key}: must be an array of tables ([[...filters]])")
        return FilterSet(default=action_default)
    filters: list[Filter] = []
    names: set[str] = set()
    for i, entry in enumerate(value):
        item = f"{key}[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{item}: must be a table")
            continue
        for unknown in sorted(set(entry) - _FILTER_KEYS):
            problems.append(f"{item}.{unknown}: unknown key")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{item}.name: required, a non-empty string")
            name = ""
        elif name in names:
            problems.append(f"{item}.name: duplicate filter name {name!r}")
        names.add(name)
        action = entry.get("action")
        if action not in _ACTIONS:
            problems.append(f"{item}.action: required, one of {', '.join(repr(a) for a in _ACTIONS)}")
            action = FilterAction.ACCEPT.value
        conditions = parse_match(f"{item}.match", entry.get("match"), problems)
        filters.append(Filter(name, FilterAction(action), conditions))
    return FilterSet(tuple(filters), action_default)
