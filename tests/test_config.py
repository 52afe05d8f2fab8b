"""Configuration validation: one message per problem, each naming its key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_proxy.config import (
    ConfigError,
    DicomDestination,
    FolderDestination,
    load_config,
    parse_config,
)
from dicom_proxy.policy import Option

REPO = Path(__file__).resolve().parent.parent


def _problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def _valid(**changes: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "node": {"ae_title": "DEID_PROXY", "port": 11112},
        "destinations": [{"name": "research", "ae_title": "RESEARCH", "host": "127.0.0.1", "port": 11113}],
    }
    raw.update(changes)
    return raw


def test_shipped_config_is_valid_and_uses_a_folder_destination() -> None:
    config = load_config(REPO / "conf" / "dicom-proxy.toml")
    assert [d.type for d in config.destinations] == ["folder"]
    assert config.destinations[0].path == Path("var/archive")
    assert config.deidentify.secret_key_file == Path("var/secret.key")
    assert Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in config.deidentify.options
    # load_config compiled the policy and read the pixel rules once.
    assert config.deidentify.policy is not None
    assert config.deidentify.policy.options == config.deidentify.options
    assert config.deidentify.pixels.rules is not None and config.deidentify.pixels.rules.rules


def test_defaults_fill_in_missing_keys() -> None:
    config = parse_config(_valid())
    assert config.node.bind == "0.0.0.0"
    assert config.node.allowed_calling_ae_titles == ()
    assert config.destinations[0].type == "dicom"
    assert config.spool.directory == Path("var/spool")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_valid(destinations=[{"name": "a", "ae_title": "A", "host": "h", "port": 70000}]),
         "destinations[0].port: must be 1-65535"),
        (_valid(node={"port": -1}), "node.port: must be 0-65535"),
        (_valid(node={"ae_title": "THIS_TITLE_IS_TOO_LONG"}), "node.ae_title: must be 1-16 characters"),
        (_valid(node={"ae_title": ""}), "node.ae_title: must not be empty"),
        (_valid(node={"prot": 104}), "node.prot: unknown key"),
        (_valid(surprise={}), "surprise: unknown key"),
        ({"node": {}}, "destinations: at least one [[destinations]] entry is required"),
        (_valid(destinations=[{"name": "x", "type": "folder"}]), "destinations[0].path: required"),
        (_valid(destinations=[{"name": "x", "type": "ftp"}]), "destinations[0].type: must be one of"),
        (_valid(destinations=[{"name": "bad name!", "type": "folder", "path": "p"}]), "destinations[0].name: must be"),
        (_valid(destinations=[{"name": "a", "ae_title": "A", "host": "h"}]), "destinations[0].port: required"),
        (_valid(deidentify={"options": ["retain_everything"]}), "deidentify.options[0]: unknown option"),
        (_valid(deidentify={"options": ["retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"]}),
         "deidentify.options: retain_longitudinal_full_dates and retain_longitudinal_modified_dates"),
        (_valid(spool={"max_bytes": "lots"}), "spool.max_bytes: must be an integer"),
        (_valid(deidentify={"text": "strict"}), "deidentify.text: must be one of"),
        (_valid(deidentify={"vocabulary_file": "/nonexistent/words.txt"}), "deidentify.vocabulary_file: file not found"),
        (_valid(node={"allowed_calling_ae_titles": "ANY"}), "node.allowed_calling_ae_titles: must be a list"),
        (_valid(logging={"level": "LOUD"}), "logging.level: must be one of"),
        (_valid(destinations=[{"name": "a", "type": "folder", "path": "p", "retry_initial_delay": 0}]),
         "destinations[0].retry_initial_delay: must be greater than 0"),
    ],
)
def test_each_problem_names_its_key_path(raw: dict[str, object], expected: str) -> None:
    problems = _problems(raw)
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_reported_together() -> None:
    problems = _problems(
        _valid(
            node={"port": 99999, "ae_title": ""},
            destinations=[
                {"name": "a", "type": "folder", "path": "p"},
                {"name": "a", "type": "folder", "path": "q"},
            ],
        )
    )
    assert "node.port: must be 0-65535" in problems
    assert "node.ae_title: must not be empty" in problems
    assert "destinations[1].name: duplicate destination name 'a'" in problems


def test_cli_reports_config_errors_with_exit_2_and_starts_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[node]\nport = 70000\n[[destinations]]\nname = "r"\nae_title = "R"\nhost = "h"\nport = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "config error: node.port: must be 0-65535" in result.stderr
    assert "config error: destinations[0].port: must be 1-65535" in result.stderr
    assert not (tmp_path / "var").exists()


def test_unreadable_and_invalid_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_options_are_enum_members_and_destinations_typed_by_kind() -> None:
    raw = _valid(deidentify={"options": ["clean_descriptors", "retain_uids", "clean_descriptors"]})
    raw["destinations"] = [
        {"name": "research", "ae_title": "RESEARCH", "host": "127.0.0.1", "port": 11113},
        {"name": "copy", "type": "folder", "path": "out"},
    ]
    config = parse_config(raw)
    assert config.deidentify.options == (Option.CLEAN_DESCRIPTORS, Option.RETAIN_UIDS)
    dicom, folder = config.destinations
    assert isinstance(dicom, DicomDestination) and dicom.port == 11113
    assert isinstance(folder, FolderDestination) and folder.path == Path("out")
    problems = _problems(_valid(destinations=[{"name": "x", "type": "folder", "path": "p", "port": 104}]))
    assert problems == ["destinations[0].port: unknown key"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_reads_rules_and_overrides_and_reports_every_problem(tmp_path: Path) -> None:
    """A broken pixel rules or overrides file is a configuration error (check-config fails)."""
    rules = _write(tmp_path / "rules.toml", '[[rules]]\nname = ""\nmatch = { Colour = "red" }\n')
    overrides = _write(tmp_path / "overrides.toml", '[attributes]\nPatientName = "K"\nNotAKeyword = "X"\n')
    config = _write(
        tmp_path / "c.toml",
        f"""
[node]
port = 0
[[destinations]]
name = "out"
type = "folder"
path = "{tmp_path / 'out'}"
[deidentify]
overrides_file = "{overrides}"
[deidentify.pixels]
rules_file = "{rules}"
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    problems = info.value.problems
    assert any(p.startswith("deidentify.overrides_file (") and "PatientName" in p for p in problems)
    assert any(p.startswith("deidentify.overrides_file (") and "NotAKeyword" in p for p in problems)
    assert any(p.startswith("deidentify.pixels.rules_file: ") and "rules[0].name" in p for p in problems)
    assert any(p.startswith("deidentify.pixels.rules_file: ") and "rules[0].match.Colour" in p for p in problems)
    result = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "check-config", "--config", str(config)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "config error: deidentify.pixels.rules_file: " in result.stderr
    assert "config error: deidentify.overrides_file (" in result.stderr
