"""Header conditions: the `match` tables of pixel rules and of profile filters.

A condition names a header attribute by its DICOM keyword (PS3.6) and lists alternative values,
compared after trimming DICOM padding; multi-valued attributes (Image Type) are compared as
their values joined with a backslash, as encoded (PS3.5 6.4). Conditions read the *original*
header, before de-identification, and never log what they compare.

```toml
match = { Modality = "US", Manufacturer = { prefix = "ACME" }, ImageType = { contains = "LOCALIZER" } }
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.dataset import Dataset


class MatchField(Enum):
    """Header attributes a condition may match on (DICOM keywords, PS3.6)."""

    MODALITY = "Modality"
    MANUFACTURER = "Manufacturer"
    MANUFACTURER_MODEL_NAME = "ManufacturerModelName"
    ROWS = "Rows"
    COLUMNS = "Columns"
    IMAGE_TYPE = "ImageType"
    SERIES_DESCRIPTION = "SeriesDescription"
    SOP_CLASS_UID = "SOPClassUID"
    BODY_PART_EXAMINED = "BodyPartExamined"
    BURNED_IN_ANNOTATION = "BurnedInAnnotation"


class MatchKind(Enum):
    """How a condition compares the header value (after trimming DICOM padding)."""

    EXACT = "exact"
    PREFIX = "prefix"
    CONTAINS = "contains"
    REGEX = "regex"  # re.fullmatch: the expression must cover the whole value


@dataclass(frozen=True)
class Condition:
    """One header condition; `values` are alternatives (any of them matches)."""

    field: MatchField
    kind: MatchKind
    values: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...] = ()

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False  # a condition never matches an absent attribute
        if self.kind is MatchKind.EXACT:
            return value in self.values
        if self.kind is MatchKind.PREFIX:
            return any(value.startswith(v) for v in self.values)
        if self.kind is MatchKind.CONTAINS:
            return any(v in value for v in self.values)
        return any(p.fullmatch(value) for p in self.patterns)


Header = Mapping[MatchField, "str | None"]


def matches_all(conditions: tuple[Condition, ...], header: Header) -> bool:
    """True when every condition holds for `header` (the values of `header_values`)."""
    return all(c.matches(header.get(c.field)) for c in conditions)


def header_values(dataset: Dataset) -> dict[MatchField, str | None]:
    """Original header values as strings: multi-valued joined with '\\' (PS3.5 6.4);
    None for an absent attribute, "" for an empty one."""
    header: dict[MatchField, str | None] = {}
    for field in MatchField:
        if field.value not in dataset:
            header[field] = None
            continue
        value = dataset.data_element(field.value).value  # type: ignore[union-attr]
        if value is None:
            header[field] = ""
        elif isinstance(value, (str, int, float)):
            header[field] = str(value).strip()
        else:
            header[field] = "\\".join(str(v).strip() for v in value)
    return header


def parse_match(key: str, value: Any, problems: list[str]) -> tuple[Condition, ...]:
    """Compile a `match` table; append one message per problem (with its key path)."""
    if not isinstance(value, dict) or not value:
        problems.append(f"{key}: required, a table with at least one condition")
        return ()
    known = {f.value: f for f in MatchField}
    conditions = []
    for name, spec in value.items():
        if name not in known:
            problems.append(f"{key}.{name}: unknown attribute; known: {', '.join(known)}")
            continue
        condition = _parse_condition(f"{key}.{name}", known[name], spec, problems)
        if condition is not None:
            conditions.append(condition)
    return tuple(conditions)


def _parse_condition(key: str, field: MatchField, spec: Any, problems: list[str]) -> Condition | None:
    kind, values = MatchKind.EXACT, spec
    if isinstance(spec, dict):
        kinds = {k.value for k in MatchKind}
        if len(spec) != 1 or next(iter(spec)) not in kinds:
            problems.append(f"{key}: a table must have exactly one of {', '.join(repr(k) for k in sorted(kinds))}")
            return None
        kind_name, values = next(iter(spec.items()))
        kind = MatchKind(kind_name)
        key = f"{key}.{kind_name}"
    alternatives = _alternatives(values)
    if alternatives is None:
        problems.append(f"{key}: must be a string, an integer or a non-empty list of them")
        return None
    patterns: list[re.Pattern[str]] = []
    if kind is MatchKind.REGEX:
        for j, text in enumerate(alternatives):
            try:
                patterns.append(re.compile(text))
            except re.error as exc:
                problems.append(f"{key}{'' if len(alternatives) == 1 else f'[{j}]'}: bad regular expression ({exc})")
                return None
    return Condition(field=field, kind=kind, values=alternatives, patterns=tuple(patterns))


def _alternatives(values: Any) -> tuple[str, ...] | None:
    items = values if isinstance(values, list) else [values]
    if not items or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in items):
        return None
    return tuple(str(v) for v in items)
