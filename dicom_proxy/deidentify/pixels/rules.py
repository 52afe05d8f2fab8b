"""Pixel rules: which objects carry burned-in text, and where (PS3.15 E.3.1 Clean Pixel Data).

Rules are data (a TOML file the site can read and review), compiled once into frozen objects.
A rule matches on the *original* header (before tag de-identification) and lists rectangles to
fill. The file format is documented in ``conf/pixel-rules.toml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from dicom_proxy.conditions import Condition, MatchField, MatchKind, matches_all, parse_match
from dicom_proxy.config import ConfigError, read_toml

# The header conditions are shared with the profile filters (dicom_proxy/conditions.py).
__all__ = ["Box", "Condition", "MatchField", "MatchKind", "Rectangle", "Rule", "RuleSet", "Units", "load_rules"]


class Units(Enum):
    """Rectangle coordinates: absolute pixels or fractions of the image width/height."""

    PIXELS = "pixels"
    FRACTION = "fraction"


@dataclass(frozen=True)
class Rectangle:
    """A region to fill, in the units of the rule (top-left origin, PS3.3 C.7.6.3.1)."""

    x: float
    y: float
    width: float
    height: float
    units: Units = Units.PIXELS

    def resolve(self, rows: int, columns: int) -> Box | None:
        """Pixel box clipped to the image; None if it lies entirely outside.

        Fractions round outwards, so the box always covers at least the requested area.
        """
        if self.units is Units.FRACTION:
            left = math.floor(self.x * columns)
            top = math.floor(self.y * rows)
            right = math.ceil((self.x + self.width) * columns)
            bottom = math.ceil((self.y + self.height) * rows)
        else:
            left, top = int(self.x), int(self.y)
            right, bottom = left + int(self.width), top + int(self.height)
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, columns), min(bottom, rows)
        if left >= right or top >= bottom:
            return None
        return Box(top=top, left=left, bottom=bottom, right=right)


@dataclass(frozen=True)
class Box:
    """A resolved rectangle in pixel indices: rows [top, bottom), columns [left, right)."""

    top: int
    left: int
    bottom: int
    right: int


@dataclass(frozen=True)
class Rule:
    """A named rule: all `conditions` must match; then every rectangle is filled."""

    name: str
    conditions: tuple[Condition, ...]
    rectangles: tuple[Rectangle, ...]
    # Fill value per sample in the stored representation; None: black for the photometric
    # interpretation (see base.default_fill).
    fill: tuple[int, ...] | None = None

    def matches(self, header: Mapping[MatchField, str | None]) -> bool:
        return matches_all(self.conditions, header)

    def boxes(self, rows: int, columns: int) -> tuple[Box, ...] | None:
        """The rule's boxes for this geometry; None if any rectangle misses the image.

        A rectangle outside the image means the rule was written for other screens: treating
        the rule as not applicable keeps the object on the fail-closed path.
        """
        boxes = tuple(r.resolve(rows, columns) for r in self.rectangles)
        if any(b is None for b in boxes):
            return None
        return tuple(b for b in boxes if b is not None)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    source: Path | None = None


_RULE_KEYS = {"name", "match", "rectangles", "fill"}
_RECT_KEYS = {"x", "y", "width", "height", "units"}


def load_rules(path: Path) -> RuleSet:
    """Read and compile a rules file; raise ConfigError naming the file and key path."""
    raw = read_toml(path, f"{path} (pixel rules)")
    problems: list[str] = []
    rules = parse_rules(raw, problems)
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return RuleSet(rules=rules, source=path)


def parse_rules(raw: Mapping[str, Any], problems: list[str]) -> tuple[Rule, ...]:
    """Compile a parsed rules document, appending one message per problem to `problems`."""
    for key in sorted(set(raw) - {"rules"}):
        problems.append(f"{key}: unknown key (expected [[rules]] tables)")
    entries = raw.get("rules", [])
    if not isinstance(entries, list):
        problems.append("rules: must be an array of tables ([[rules]])")
        return ()
    rules: list[Rule] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        key = f"rules[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{key}: must be a table")
            continue
        rule = _parse_rule(key, entry, problems)
        if rule is None:
            continue
        if rule.name in names:
            problems.append(f"{key}.name: duplicate rule name {rule.name!r}")
        names.add(rule.name)
        rules.append(rule)
    return tuple(rules)


def _parse_rule(key: str, t: dict[str, Any], problems: list[str]) -> Rule | None:
    before = len(problems)
    for unknown in sorted(set(t) - _RULE_KEYS):
        problems.append(f"{key}.{unknown}: unknown key")
    name = t.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{key}.name: required, a non-empty string")
        name = ""
    conditions = parse_match(f"{key}.match", t.get("match"), problems)
    rectangles = _parse_rectangles(f"{key}.rectangles", t.get("rectangles"), problems)
    fill = _parse_fill(f"{key}.fill", t.get("fill"), problems)
    if len(problems) > before:
        return None
    return Rule(name=name, conditions=conditions, rectangles=rectangles, fill=fill)


def _parse_rectangles(key: str, value: Any, problems: list[str]) -> tuple[Rectangle, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{key}: required, a non-empty list of {{x, y, width, height}} tables")
        return ()
    result = []
    for i, entry in enumerate(value):
        rect = _parse_rectangle(f"{key}[{i}]", entry, problems)
        if rect is not None:
            result.append(rect)
    return tuple(result)


def _parse_rectangle(key: str, t: Any, problems: list[str]) -> Rectangle | None:
    if not isinstance(t, dict):
        problems.append(f"{key}: must be a table {{x, y, width, height, units}}")
        return None
    before = len(problems)
    for unknown in sorted(set(t) - _RECT_KEYS):
        problems.append(f"{key}.{unknown}: unknown key")
    units_name = t.get("units", Units.PIXELS.value)
    if units_name not in {u.value for u in Units}:
        problems.append(f"{key}.units: must be 'pixels' or 'fraction'")
        return None
    units = Units(units_name)
    numbers: dict[str, float] = {}
    for name in ("x", "y", "width", "height"):
        v = t.get(name)
        if v is None:
            problems.append(f"{key}.{name}: required")
        elif units is Units.PIXELS and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            problems.append(f"{key}.{name}: must be an integer >= 0 (pixels)")
        elif units is Units.FRACTION and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            problems.append(f"{key}.{name}: must be a number from 0 to 1 (fraction)")
        else:
            numbers[name] = v
    if len(problems) > before:
        return None
    if numbers["width"] <= 0 or numbers["height"] <= 0:
        problems.append(f"{key}: width and height must be greater than 0")
        return None
    if units is Units.FRACTION and (numbers["x"] + numbers["width"] > 1 or numbers["y"] + numbers["height"] > 1):
        problems.append(f"{key}: x + width and y + height must not exceed 1 (fraction)")
        return None
    return Rectangle(units=units, **numbers)


def _parse_fill(key: str, value: Any, problems: list[str]) -> tuple[int, ...] | None:
    if value is None:
        return None
    items: Sequence[Any] = value if isinstance(value, list) else [value]
    if not items or len(items) not in (1, 3) or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        problems.append(f"{key}: must be an integer or a list of 3 integers (one per sample)")
        return None
    return tuple(items)
