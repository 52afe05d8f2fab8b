"""Every concrete row of PS3.15 Table E.1-1 (2026d), Basic Profile and each option cell.

A data set carrying the attribute with an identifiable value comes out as the table says.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_proxy.deidentify.dates import shift_da
from dicom_proxy.deidentify.pseudonyms import PatientIdentity, date_offset_days
from dicom_proxy.deidentify.uids import pseudonymous_uid
from dicom_proxy.policy import Action, compile_policy, parse_action, table_rows
from tests.dicomfactory import KEY, ct_dataset, engine, read

ROWS = table_rows()
CONCRETE = [row for row in ROWS if not row["pattern"]]
# Command (0000), File Meta (0002) and DICOMDIR (0004) attributes cannot occur in a stored data
# set; their rows are checked on the compiled policy only.
IN_DATASET = [row for row in CONCRETE if int(row["tag"][1:5], 16) > 0x0004]
NOT_IN_DATASET = [row for row in CONCRETE if int(row["tag"][1:5], 16) <= 0x0004]
CELLS = [(row, option) for row in IN_DATASET for option in row["options"]]

NAME = "QUINTERO^MARISOL"
UID = "1.2.826.0.1.3680043.9.5555.77.1"
TEXT = "CHEST Winifred Holloway 5550199"  # the name of ct_dataset's patient
BINARY = b"MARISOLQUINTERO!"

_VALUES: dict[str, Any] = {
    "PN": NAME,
    "LO": TEXT,
    "SH": "MQ5550199",
    "ST": TEXT,
    "LT": TEXT,
    "UT": TEXT,
    "UC": TEXT,
    "CS": "QUINTERO",
    "AE": "QUINTERO_AE",
    "AS": "047Y",
    "DA": "20190723",
    "DT": "20190723101500",
    "TM": "101500",
    "UI": UID,
    "DS": "71.5",
    "IS": "47",
    "US": 47,
    "SS": 47,
    "UL": 47,
    "FL": 1.5,
    "FD": 1.5,
    "UR": "http://example.org/quintero",
    "OB": BINARY,
    "OW": BINARY,
    "UN": BINARY,
}


_KEPT_TEXT = {vr: "QUINTERO 5550199" for vr in ("LO", "ST", "LT", "UT", "UC")}


def _id(row: dict[str, Any]) -> str:
    return f"{row['tag']} {row['keyword']}"


def _planted(row: dict[str, Any], action: Action | None = None) -> tuple[Dataset, int]:
    ds = ct_dataset()
    tag = int(row["tag"][1:5] + row["tag"][6:10], 16)
    vr = row["vr"]
    if vr == "SQ":
        item = Dataset()
        item.add_new(
            0x00401101 if tag != 0x00401101 else 0x0040A123,
            "SQ" if tag != 0x00401101 else "PN",
            [] if tag != 0x00401101 else NAME,
        )
        item.add_new(0x0040A123, "PN", NAME)  # Person Name: D wherever it is
        item.add_new(0x00081155, "UI", UID)  # Referenced SOP Instance UID: U
        ds.add_new(tag, "SQ", Sequence([item]))
    elif action is Action.KEEP and vr in _KEPT_TEXT:
        # A kept value must not carry this patient's name (verify would rightly refuse it).
        ds.add_new(tag, vr, _KEPT_TEXT[vr])
    else:
        ds.add_new(tag, vr, _VALUES[vr])
    return ds, tag


def _check(row: dict[str, Any], action: Action, options: tuple[str, ...]) -> None:
    ds, tag = _planted(row, action)
    original = ds[tag].value
    identity = PatientIdentity.of(ds)
    out = read(engine(*options).deidentify(ds).encoded)
    vr = row["vr"]
    if action is Action.REMOVE:
        assert tag not in out
        return
    if tag in (0x00100010, 0x00100020):  # Patient's Name / ID: keyed pseudonyms (DESIGN.md)
        assert tag in out and str(out[tag].value) and str(out[tag].value) != str(original)
        return
    assert tag in out, "attribute must be present"
    value = out[tag].value
    if vr == "SQ":
        _check_sequence(action, value)
    elif action is Action.ZERO:
        assert value in (None, "", b"", [])
    elif action is Action.KEEP:
        assert value == original
    elif action is Action.DUMMY:
        assert value not in (None, "", b"") and value != original
    elif action is Action.REPLACE_UID:
        assert value == pseudonymous_uid(KEY, UID)
    elif action is Action.CLEAN:
        _check_clean(vr, value, original, options, identity)


def _check_sequence(action: Action, value: Any) -> None:
    if action is Action.ZERO:
        assert len(value) == 0
        return
    assert len(value) == 1, "a kept sequence keeps its item"
    item = value[0]
    assert str(item.get("PersonName", "")) != NAME
    assert item.ReferencedSOPInstanceUID == pseudonymous_uid(KEY, UID) or action is Action.KEEP


def _check_clean(vr: str, value: Any, original: Any, options: tuple[str, ...], identity: str) -> None:
    if vr == "DA":
        assert value == shift_da(original, date_offset_days(KEY, identity))
    elif vr == "DT":
        assert value == shift_da(original[:8], date_offset_days(KEY, identity)) + original[8:]
    elif vr == "TM":
        assert value == original  # whole-day shift: times of day are unchanged
    elif vr == "UI":
        assert value == pseudonymous_uid(KEY, UID)
    elif vr in ("OB", "OW", "UN"):
        pytest.fail("binary values cannot be cleaned and must be removed")
    else:
        text = str(value).casefold()
        assert "holloway" not in text and "winifred" not in text and "5550199" not in text
        if "CHEST" in str(original):
            assert "chest" in text, "cleaning keeps the useful words"


def _expected(row: dict[str, Any], options: tuple[str, ...]) -> Action:
    return compile_policy(options).rules[int(row["tag"][1:5] + row["tag"][6:10], 16)].action


@pytest.mark.parametrize("row", IN_DATASET, ids=_id)
def test_basic_profile_row(row: dict[str, Any]) -> None:
    action = _expected(row, ())
    assert action is parse_action(row["basic"])[0]
    if action is Action.CLEAN or (row["vr"] in ("OB", "OW", "UN") and action is Action.CLEAN):
        pytest.fail("the Basic Profile has no C cells")
    _check_row(row, action, ())


def _check_row(row: dict[str, Any], action: Action, options: tuple[str, ...]) -> None:
    if action is Action.CLEAN and row["vr"] in ("OB", "OW", "UN"):
        ds, tag = _planted(row)
        assert tag not in read(engine(*options).deidentify(ds).encoded)
        return
    _check(row, action, options)


@pytest.mark.parametrize(("row", "option"), CELLS, ids=[f"{_id(r)}-{o}" for r, o in CELLS])
def test_option_cell(row: dict[str, Any], option: str) -> None:
    action = _expected(row, (option,))
    assert action is parse_action(row["options"][option])[0]
    _check_row(row, action, (option,))


@pytest.mark.parametrize("row", NOT_IN_DATASET, ids=_id)
def test_command_and_meta_rows_compile(row: dict[str, Any]) -> None:
    assert _expected(row, ()) is parse_action(row["basic"])[0]


def test_every_row_is_covered() -> None:
    assert len(ROWS) == 657
    assert len(IN_DATASET) + len(NOT_IN_DATASET) + 4 == len(ROWS)


def test_kept_value_with_the_patients_name_is_refused() -> None:
    """Retain Device Identity keeps Station Name; if it carries the patient's name, verify refuses."""
    from dicom_proxy.models import Refused

    ds = ct_dataset()
    ds.StationName = "CT HOLLOWAY 3"
    with pytest.raises(Refused, match="PatientName"):
        engine("retain_device_identity").deidentify(ds)
