"""Policy compilation: options, compound codes, overrides (stricter only), format_policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_proxy.config import ConfigError
from dicom_proxy.deidentify import Engine
from dicom_proxy.policy import (
    Action,
    Option,
    compile_policy,
    format_policy,
    parse_action,
    table_rows,
)
from tests.dicomfactory import KEY, header_config

PATIENT_SEX = 0x00100040
STUDY_DESCRIPTION = 0x00081030


def test_table_data_is_the_2026d_edition() -> None:
    policy = compile_policy(())
    assert policy.edition == "2026d"
    assert len(table_rows()) == 657
    assert policy.rules[0x00100010].action is Action.ZERO  # Patient's Name: Z


@pytest.mark.parametrize(
    ("code", "action"),
    [("X", Action.REMOVE), ("Z", Action.ZERO), ("D", Action.DUMMY), ("K", Action.KEEP), ("C", Action.CLEAN),
     ("U", Action.REPLACE_UID), ("X/Z", Action.ZERO), ("X/D", Action.DUMMY), ("Z/D", Action.DUMMY),
     ("X/Z/D", Action.DUMMY), ("X/Z/U*", Action.REPLACE_UID)],
)
def test_action_codes(code: str, action: Action) -> None:
    assert parse_action(code)[0] is action


def test_unknown_action_code() -> None:
    with pytest.raises(ValueError):
        parse_action("Q")


def test_options_switch_columns_on() -> None:
    assert compile_policy(()).rules[PATIENT_SEX].action is Action.ZERO
    assert compile_policy(("retain_patient_characteristics",)).rules[PATIENT_SEX].action is Action.KEEP
    assert compile_policy(("clean_descriptors",)).rules[STUDY_DESCRIPTION].action is Action.CLEAN


def test_strictest_option_cell_wins() -> None:
    # Date of Last Calibration: Retain Device Identity K, Modified Dates C -> C.
    policy = compile_policy(("retain_device_identity", "retain_longitudinal_modified_dates"))
    assert policy.rules[0x00181200].action is Action.CLEAN


def test_all_ten_options_have_codes() -> None:
    codes = {option.code.value for option in Option}
    assert len(Option) == 10 and len(codes) == 10


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overrides.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_override_stricter(tmp_path: Path) -> None:
    path = _write(tmp_path, '[attributes]\nPatientSex = "X"\n"(0008,0070)" = "X"\n[private."ACME 1.0"]\n"(0009,xx10)" = "X"\n')
    policy = compile_policy(("retain_patient_characteristics",), path)
    assert policy.rules[PATIENT_SEX].action is Action.REMOVE
    assert policy.rules[0x00080070].action is Action.REMOVE
    assert "override" in policy.rules[PATIENT_SEX].why


def test_override_weaker_refused_naming_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, '[attributes]\nPatientSex = "K"\n')
    with pytest.raises(ConfigError) as info:
        compile_policy((), path)
    assert "attributes.PatientSex" in info.value.problems[0] and "allow_weaker" in info.value.problems[0]


def test_override_weaker_allowed_explicitly(tmp_path: Path) -> None:
    path = _write(tmp_path, 'allow_weaker = true\n[attributes]\nPatientSex = "K"\n[private."ACME 1.0"]\n"(0009,xx10)" = "K"\n')
    policy = compile_policy((), path)
    assert policy.rules[PATIENT_SEX].action is Action.KEEP
    assert policy.private_rules[("ACME 1.0", 0x0009, 0x10)].action is Action.KEEP


@pytest.mark.parametrize(
    ("text", "key"),
    [('[attributes]\nNoSuchKeyword = "X"\n', "attributes.NoSuchKeyword"),
     ('[attributes]\nPatientSex = "Q"\n', "attributes.PatientSex"),
     ('[attributes]\nPatientSex = "U"\n', "attributes.PatientSex"),
     ('[private."ACME"]\n"(0008,xx10)" = "X"\n', "private.ACME.(0008,xx10)"),
     ('colour = 1\n', "colour"),
     ('allow_weaker = "yes"\n', "allow_weaker")],
)
def test_bad_overrides_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_policy((), _write(tmp_path, text))
    assert any(key in problem for problem in info.value.problems)


def test_engine_raises_config_error_for_bad_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "not toml [")
    with pytest.raises(ConfigError):
        Engine(header_config(overrides_file=path), KEY)


def test_override_applies_in_engine(tmp_path: Path) -> None:
    from tests.dicomfactory import ct_dataset, read

    path = _write(tmp_path, '[attributes]\nManufacturer = "X"\n')
    out = read(Engine(header_config(overrides_file=path), KEY).deidentify(ct_dataset()).encoded)
    assert "Manufacturer" not in out


def test_format_policy_lists_every_attribute() -> None:
    engine = Engine(header_config("retain_uids"), KEY)
    text = format_policy(engine.policy)
    assert "(0010,0010)" in text and "Patient's Name" in text and "basic profile Z" in text
    assert "option retain_uids K" in text
    assert "(60xx,3000)" in text and "(odd group)" in text and "unlisted UI" in text
    assert len(text.splitlines()) > 650


def test_show_policy_shows_every_special_rule_and_the_text_mode() -> None:
    from dicom_proxy.policy.special import SPECIAL_RULES

    text = format_policy(compile_policy((), text="allowlist"))
    assert "text: allowlist" in text
    for rule in SPECIAL_RULES:
        assert rule.name[:60] in text
    assert "[text allowlist]" in text


def test_text_modes_of_clean_rules() -> None:
    from dicom_proxy.policy import TextMode

    basic, cleaning = compile_policy(()), compile_policy(("clean_descriptors",))
    code_meaning, code_value = 0x00080104, 0x00080100
    assert basic.rules[code_meaning].text is TextMode.ALLOWLIST  # Basic Profile: descriptor words only
    assert cleaning.rules[code_meaning].text is TextMode.CLEAN
    assert basic.rules[code_value].text is TextMode.WORDS
    assert compile_policy(("clean_descriptors",), text="allowlist").rules[STUDY_DESCRIPTION].text is TextMode.ALLOWLIST
    assert basic.unlisted("CS").action is Action.CLEAN
