"""The action codes of PS3.15 Table E.1-1 and how compound codes are resolved.

PS3.15 E.1.1 defines D, Z, X, K, C, U and the compound codes X/Z, X/D, Z/D, X/Z/D, X/Z/U*,
whose choice depends on the attribute's Type in the IOD (PS3.3). The engine does not know the
Type of every attribute in every IOD, so it picks the member of the compound that is valid for
*any* Type (PS3.5 7.4): Z is valid for Type 2 and 3, D (and U, which is a D for UIDs) for
Type 1, 2 and 3. The result never keeps more of the original value than the strictest member.
"""

from __future__ import annotations

from enum import Enum


class Action(Enum):
    """One action of PS3.15 Table E.1-1 (E.1.1 "Action codes")."""

    REMOVE = "X"  # remove the attribute
    ZERO = "Z"  # replace with a zero length value (or a dummy value, PS3.15 E.1.1)
    DUMMY = "D"  # replace with a non-zero length dummy value consistent with the VR
    KEEP = "K"  # keep (unchanged for non-sequences, cleaned for sequences)
    CLEAN = "C"  # replace with values of similar meaning known not to identify
    REPLACE_UID = "U"  # replace with a non-zero length UID, consistent within the set

    @property
    def strictness(self) -> int:
        """How much of the original value the action removes (higher: stricter).

        Used to decide which option cell wins and whether an override weakens the policy.
        """
        return _STRICTNESS[self]


_STRICTNESS = {
    Action.KEEP: 0,
    Action.CLEAN: 1,
    Action.REPLACE_UID: 2,
    Action.DUMMY: 3,
    Action.ZERO: 3,
    Action.REMOVE: 4,
}

# Compound code -> (resolved action, reason). See the module docstring.
_COMPOUND = {
    "X/Z": (Action.ZERO, "X/Z: Z is valid for Type 2 and 3"),
    "X/D": (Action.DUMMY, "X/D: D is valid for Type 1 and 3"),
    "Z/D": (Action.DUMMY, "Z/D: D is valid for Type 1 and 2"),
    "X/Z/D": (Action.DUMMY, "X/Z/D: D is valid for every Type"),
    "X/Z/U*": (Action.REPLACE_UID, "X/Z/U*: U (UIDs replaced, sequence kept) is valid for every Type"),
}


def parse_action(code: str) -> tuple[Action, str]:
    """Resolve a Table E.1-1 cell ("X", "X/Z/D", ...) to one Action and a short reason.

    Raises ValueError for a code the standard does not define.
    """
    code = code.strip()
    if code in _COMPOUND:
        return _COMPOUND[code]
    try:
        return Action(code), code
    except ValueError:
        raise ValueError(f"unknown action code {code!r}") from None
