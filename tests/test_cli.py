"""`dicom-proxy deidentify`, `check-config`, `spool`: exit codes, outputs named by new identity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom import dcmread

from tests.corpus import PATIENTS, write_corpus
from tests.netpeers import base_config, write_config


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_proxy", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _config(tmp_path: Path, init: bool = True) -> Path:
    """A folder-destination config; `init` creates its secret key (deidentify never does)."""
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "archive")}
    config = write_config(tmp_path / "proxy.toml", base_config(tmp_path, [folder]))
    if init:
        assert _run("init", "--config", str(config), cwd=tmp_path).returncode == 0
    return config


def test_deidentify_writes_by_new_identity_and_exits_0(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "in" / PATIENTS[0].name.replace("^", "_"), patients=2, images_per_series=2)
    result = _run("deidentify", "--config", str(_config(tmp_path)), "--output", str(tmp_path / "out"),
                  str(tmp_path / "in"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(outputs) == len(corpus)
    assert f"summary: {len(corpus)} written, 0 refused" in result.stdout
    for path in outputs:
        ds = dcmread(path)
        assert path.relative_to(tmp_path / "out").parts == (
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), f"{ds.SOPInstanceUID}.dcm")
    # Neither names nor MRNs in anything printed (input folder names carry one here).
    for patient in PATIENTS:
        for part in (patient.patient_id, *patient.name.split("^")):
            assert part not in result.stdout + result.stderr
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0


def test_deidentify_exits_1_when_any_input_is_refused(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "in", patients=1, images_per_series=1)
    (tmp_path / "in" / "notes-about-MRN77441209.txt").write_text("not DICOM")
    result = _run("deidentify", "--config", str(_config(tmp_path)), "--output", str(tmp_path / "out"),
                  str(tmp_path / "in"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"summary: {len(corpus)} written, 1 refused" in result.stdout
    assert "MRN77441209" not in result.stdout + result.stderr


def test_deidentify_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = _run("deidentify", "--config", str(_config(tmp_path)), "--output", str(tmp_path / "out"),
                   str(tmp_path / "DOE_JOHN"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "DOE_JOHN" not in missing.stderr
    no_args = _run("deidentify", "--config", str(_config(tmp_path)), cwd=tmp_path)
    assert no_args.returncode == 2


def test_check_config_and_spool_status(tmp_path: Path) -> None:
    config = _config(tmp_path)
    checked = _run("check-config", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0 and "OK" in checked.stdout
    status = _run("spool", "status", "--config", str(config), cwd=tmp_path)
    assert status.returncode == 0


def test_deidentify_reports_duplicates_distinctly(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "in", patients=1, series_per_study=1, images_per_series=2)
    copy = tmp_path / "in" / "zz-copy.dcm"
    copy.write_bytes(corpus[0].read_bytes())  # the same object twice
    changed = dcmread(corpus[1])
    changed.InstanceNumber = 99  # same SOP Instance UID, different content
    changed.save_as(tmp_path / "in" / "zz-changed.dcm", enforce_file_format=True)
    config = _config(tmp_path)
    result = _run("deidentify", "--config", str(config), "--output", str(tmp_path / "out"), str(tmp_path / "in"),
                  cwd=tmp_path)
    assert f"summary: {len(corpus)} written, 0 refused, 2 duplicates not written again" in result.stdout
    assert result.stdout.count("written: ") == len(corpus)
    duplicates = [line for line in result.stdout.splitlines() if line.startswith("duplicate: ")]
    assert len(duplicates) == 2
    assert any("(same content)" in line for line in duplicates)
    assert any("(DIFFERENT content)" in line for line in duplicates)
    assert result.returncode == 1  # different content under one SOP Instance UID needs a look
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == len(corpus)
    again = _run("deidentify", "--config", str(config), "--output", str(tmp_path / "out"), str(corpus[0]),
                 cwd=tmp_path)
    assert "(replaced a file from an earlier run)" in again.stdout and again.returncode == 0


def test_pseudonym_of_a_patient_without_id_matches_the_output(tmp_path: Path) -> None:
    from tests.dicomfactory import ct_dataset

    ds = ct_dataset()
    del ds.PatientID
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "x.dcm", enforce_file_format=True)
    config = _config(tmp_path)
    assert _run("deidentify", "--config", str(config), "--output", str(tmp_path / "out"), str(tmp_path / "in"),
                cwd=tmp_path).returncode == 0
    [output] = (tmp_path / "out").rglob("*.dcm")
    pseudonym = _run("pseudonym", "--config", str(config), "--patient-name", "Holloway^Winifred",
                     "--birth-date", str(ds.PatientBirthDate), "--sex", str(ds.PatientSex), cwd=tmp_path)
    assert pseudonym.returncode == 0, pseudonym.stderr
    # No Patient ID in, none out; the Patient's Name pseudonym derives from the same identity.
    name = str(dcmread(output).PatientName)
    assert name.startswith("ANON^") and f"patient_name  {name}" in pseudonym.stdout
    assert "HOLLOWAY" not in pseudonym.stdout.upper().replace("ANON^", "")
