"""Profiles, filters and subject tables: configuration, engine, and over real associations."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_proxy.config import ConfigError, load_config, parse_config
from dicom_proxy.filters import FilterAction
from dicom_proxy.models import Dropped, Refused
from dicom_proxy.policy import Option
from dicom_proxy.profiles import Profiles
from dicom_proxy.status import StoreStatus
from tests.corpus import PATIENTS, write_corpus
from tests.dicomfactory import KEY, PATIENT_ID, ct_dataset, read
from tests.netpeers import Proxy, pynetdicom_send_files, storescu, wait_until

REPO = Path(__file__).resolve().parent.parent
LOCALIZER_SOP = "1.2.840.10008.5.1.4.1.1.2"


def _problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


_BASE = """
[node]
port = 0
[[destinations]]
name = "a"
type = "folder"
path = "out-a"
[[destinations]]
name = "b"
type = "folder"
path = "out-b"
"""


def test_without_profiles_one_implicit_default_profile_takes_every_caller() -> None:
    config = parse_config({"destinations": [{"name": "a", "type": "folder", "path": "x"}],
                           "deidentify": {"options": ["clean_descriptors"]}})
    (profile,) = config.profiles
    assert profile.implicit and profile.name == "default" and profile.destinations == ("a",)
    assert profile.deidentify is config.deidentify
    profiles = Profiles(config, KEY)
    chosen = profiles.select("ANYONE", "192.0.2.7")
    assert chosen is not None and chosen.engine.profile == ""  # (0012,0063) as before profiles


def test_profiles_inherit_deidentify_keys_and_select_by_ae_title_and_network(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_BASE + """
[deidentify]
secret_key_file = "k"
options = ["clean_descriptors"]
[deidentify.pixels]
high_risk_modalities = ["US"]
[[profiles]]
name = "lung"
calling_ae_titles = ["CT1"]
networks = ["10.1.0.0/16"]
destinations = ["a"]
options = ["retain_longitudinal_modified_dates"]
[profiles.pixels]
on_uncleaned = "remove_pixels"
[[profiles]]
name = "default"
destinations = ["b", "a"]
""")
    config = load_config(path)
    lung, default = config.profiles
    assert lung.deidentify.options == (Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,)
    assert lung.deidentify.pixels.high_risk_modalities == ("US",)  # inherited key of the table
    assert lung.deidentify.pixels.on_uncleaned == "remove_pixels"
    assert default.deidentify.options == (Option.CLEAN_DESCRIPTORS,)
    assert lung.deidentify.secret_key_file == default.deidentify.secret_key_file == Path("k")
    profiles = Profiles(config, KEY)
    assert profiles.select("CT1", "10.1.2.3").name == "lung"  # type: ignore[union-attr]
    assert profiles.select("CT1", "::ffff:10.1.2.3").name == "lung"  # type: ignore[union-attr]
    assert profiles.select("CT1", "10.2.0.1").name == "default"  # type: ignore[union-attr]
    assert profiles.select("CT2", "10.1.2.3").name == "default"  # type: ignore[union-attr]
    assert profiles.named("lung").engine.policy.options == (Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,)
    with pytest.raises(ConfigError, match="no profile named 'nope'; known: lung, default"):
        profiles.named("nope")


def test_profile_problems_name_their_key_paths(tmp_path: Path) -> None:
    problems = _problems(_BASE + """
[deidentify]
[[deidentify.filters]]
name = "x"
action = "drop"
match = { Modality = "SR" }
[[profiles]]
name = "p"
destinations = ["a", "zz"]
secret_key_file = "other.key"
options = ["retain_everything"]
[[profiles.filters]]
name = "f"
action = "explode"
match = { Colour = "red" }
[[profiles]]
name = "default"
calling_ae_titles = ["X"]
networks = ["10.0.0.1/8"]
destinations = []
[profiles.subjects]
unmapped = "maybe"
[[profiles]]
name = "p"
calling_ae_titles = ["Y"]
destinations = ["b"]
""", tmp_path)
    expected = [
        "deidentify.filters: with [[profiles]], set it in each profile",
        "profiles[0].secret_key_file: node-wide",
        "profiles[0]: calling_ae_titles or networks required",
        "profiles[0].destinations[1]: no [[destinations]] named 'zz'",
        "profiles[0].options[0]: unknown option 'retain_everything'",
        "profiles[0].filters[0].action: required, one of",
        "profiles[0].filters[0].match.Colour: unknown attribute",
        "profiles[1].networks[0]: must be an address or network",
        "profiles[1]: the default profile takes every caller",
        "profiles[1].destinations: required",
        "profiles[1].subjects.file: required",
        "profiles[1].subjects.unmapped: must be one of",
        "profiles[2].name: duplicate profile name 'p'",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)


def _subjects(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "subjects.csv"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_subject_table_is_checked_like_the_key_and_never_quoted(tmp_path: Path) -> None:
    table = _subjects(tmp_path, "patient_id,issuer,subject_id\nMRN4417823,,LUNG-0001\n", mode=0o640)
    config = _BASE + f'[deidentify.subjects]\nfile = "{table}"\n'
    (problem,) = _problems(config, tmp_path)
    assert problem.startswith("deidentify.subjects.file: ") and "group or others" in problem
    _subjects(tmp_path, "patient_id,subject_id\nMRN4417823,LUNG-0001\nMRN4417823,LUNG-0002\nMRN99,\n")
    problems = _problems(config, tmp_path)
    assert any("line 3: the same patient" in p for p in problems)
    assert any("line 4: subject_id must be" in p for p in problems)
    assert not any("MRN" in p or "LUNG-" in p for p in problems)
    _subjects(tmp_path, "mrn,study_id\nMRN4417823,LUNG-0001\n")
    assert "the first line must name the columns" in _problems(config, tmp_path)[0]


def _engine_for(tmp_path: Path, profile_text: str) -> Profiles:
    path = tmp_path / "c.toml"
    path.write_text(_BASE + '[deidentify]\nsecret_key_file = "k"\n[deidentify.pixels]\nhigh_risk_modalities = []\n'
                    + profile_text)
    return Profiles(load_config(path), KEY)


def test_filters_accept_drop_and_reject_on_the_original_header(tmp_path: Path) -> None:
    profiles = _engine_for(tmp_path, """
[[deidentify.filters]]
name = "keep chest"
action = "accept"
match = { SeriesDescription = { regex = '(?i).*chest.*' } }
[[deidentify.filters]]
name = "no scouts"
action = "drop"
match = { ImageType = { contains = "LOCALIZER" } }
[[deidentify.filters]]
name = "no SR"
action = "reject"
match = { Modality = "SR" }
""")
    engine = profiles.named(None).engine
    assert engine.config.filters.filters[1].action is FilterAction.DROP
    scout = ct_dataset()
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    with pytest.raises(Dropped) as dropped:
        engine.deidentify(scout)
    assert dropped.value.filter_name == "no scouts"
    assert dropped.value.identity is not None and dropped.value.identity.sop_instance_uid.startswith("2.25.")
    chest_scout = ct_dataset()
    chest_scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    chest_scout.SeriesDescription = "Chest scout"
    assert read(engine.deidentify(chest_scout).encoded).ImageType  # the first filter accepted it
    report = ct_dataset()
    report.Modality = "SR"
    with pytest.raises(Refused) as refused:
        engine.deidentify(report)
    assert refused.value.status is StoreStatus.REJECTED_BY_PROFILE
    assert read(engine.deidentify(ct_dataset()).encoded).PatientIdentityRemoved == "YES"  # no filter: accept


def test_filters_default_drops_what_no_filter_accepts(tmp_path: Path) -> None:
    engine = _engine_for(tmp_path, """
[deidentify]
""".replace("[deidentify]\n", "") + 'filters_default = "drop"\n' if False else """
[[profiles]]
name = "us-only"
calling_ae_titles = ["US"]
destinations = ["a"]
filters_default = "drop"
[[profiles.filters]]
name = "ultrasound"
action = "accept"
match = { Modality = "US" }
""").named("us-only").engine
    with pytest.raises(Dropped) as dropped:
        engine.deidentify(ct_dataset())
    assert dropped.value.filter_name == "filters_default"
    us = ct_dataset()
    us.Modality = "US"
    out = read(engine.deidentify(us).encoded)
    assert "profile us-only" in list(out.DeidentificationMethod)


def test_mapped_patient_gets_subject_id_unmapped_gets_pseudonym_or_is_refused(tmp_path: Path) -> None:
    table = _subjects(tmp_path, f"patient_id,issuer,subject_id,subject_name\n{PATIENT_ID},,LUNG-0042,LUNG^0042\n")
    profiles = _engine_for(tmp_path, f"""
[[profiles]]
name = "study"
calling_ae_titles = ["CT"]
destinations = ["a"]
[profiles.subjects]
file = "{table}"
[[profiles]]
name = "strict"
calling_ae_titles = ["CT2"]
destinations = ["a"]
[profiles.subjects]
file = "{table}"
unmapped = "refuse"
[[profiles]]
name = "plain"
calling_ae_titles = ["CT3"]
destinations = ["b"]
""")
    mapped = read(profiles.named("study").engine.deidentify(ct_dataset()).encoded)
    assert (mapped.PatientID, str(mapped.PatientName)) == ("LUNG-0042", "LUNG^0042")

    def other() -> Dataset:
        ds = ct_dataset()
        ds.PatientID = "MRN000111"
        return ds

    unmapped = read(profiles.named("study").engine.deidentify(other()).encoded)
    plain = read(profiles.named("plain").engine.deidentify(other()).encoded)
    assert unmapped.PatientID == plain.PatientID and unmapped.PatientID not in ("MRN000111", "LUNG-0042")
    with pytest.raises(Refused, match="not in the profile's subject table"):
        profiles.named("strict").engine.deidentify(other())
    # Issuer matters: the table's row has no issuer.
    issued = ct_dataset()
    issued.IssuerOfPatientID = "HOSP_B"
    assert read(profiles.named("study").engine.deidentify(issued).encoded).PatientID != "LUNG-0042"


# -- over real associations ---------------------------------------------------------------


def _two_flow_config(tmp_path: Path, lung_options: str = '["retain_longitudinal_modified_dates"]',
                     lung_name: str = "lung") -> Path:
    table = tmp_path / "subjects.csv"
    if not table.exists():
        _subjects(tmp_path, f"patient_id,issuer,subject_id,subject_name\n{PATIENTS[0].patient_id},,LUNG-0042,\n")
    path = tmp_path / "proxy.toml"
    path.write_text(f"""
[node]
ae_title = "DEID_PROXY"
bind = "127.0.0.1"
port = 0
[[destinations]]
name = "lung-out"
type = "folder"
path = "{tmp_path / 'lung'}"
[[destinations]]
name = "teach-out"
type = "folder"
path = "{tmp_path / 'teach'}"
[deidentify]
secret_key_file = "{tmp_path / 'secret.key'}"
[spool]
directory = "{tmp_path / 'spool'}"
min_free_bytes = 0
[logging]
audit_file = "{tmp_path / 'audit.jsonl'}"
[[profiles]]
name = "{lung_name}"
calling_ae_titles = ["CT_LUNG"]
networks = ["127.0.0.0/8"]
destinations = ["lung-out"]
options = {lung_options}
[profiles.subjects]
file = "{table}"
[[profiles.filters]]
name = "no scouts"
action = "drop"
match = {{ ImageType = {{ contains = "LOCALIZER" }} }}
[[profiles.filters]]
name = "no MR"
action = "reject"
match = {{ Modality = "MR" }}
[[profiles]]
name = "teaching"
calling_ae_titles = ["PYNETDICOM"]
destinations = ["teach-out"]
""")
    return path


def _outputs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm")) if folder.exists() else []


@pytest.mark.network
def test_two_callers_get_their_own_policy_filters_and_destinations(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=1, images_per_series=2)
    scout = dcmread(corpus[1])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.save_as(corpus[1])
    mr = dcmread(corpus[3])
    mr.Modality = "MR"
    mr.save_as(corpus[3])
    with Proxy(_two_flow_config(tmp_path), tmp_path) as proxy:
        lung = storescu(proxy.port, corpus, calling="CT_LUNG")
        # scout dropped with Success, MR rejected by the filter (0xC005)
        assert lung.statuses[:3] == ["Success", "Success", "Success"], lung.output
        assert lung.statuses[3].startswith("Error"), lung.statuses
        teach = pynetdicom_send_files(proxy.port, corpus[:3])
        assert teach == [0, 0, 0]
        intruder = storescu(proxy.port, corpus[:1], calling="INTRUDER")
        assert intruder.statuses == [] and "Rejected" in intruder.output
        assert wait_until(lambda: len(_outputs(tmp_path / "lung")) == 2 and len(_outputs(tmp_path / "teach")) == 3, 60)
        assert proxy.terminate() == 0
        audit_text = (tmp_path / "audit.jsonl").read_text()
        audit = [json.loads(line) for line in audit_text.splitlines()]
        assert "profile lung: 1 dropped" in proxy.log() and "profile teaching: 3 stored" in proxy.log()
    lung_out = [dcmread(p) for p in _outputs(tmp_path / "lung")]
    teach_out = {dcmread(p).SOPInstanceUID: dcmread(p) for p in _outputs(tmp_path / "teach")}
    # Different policies, checked on the output: dates shifted vs. the basic profile's dummies;
    # (0012,0063) names the profile.
    originals = {str(dcmread(p).StudyDate) for p in corpus}
    for ds in lung_out:
        assert "profile lung" in list(ds.DeidentificationMethod)
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.StudyDate and ds.StudyDate not in originals
    for ds in teach_out.values():
        assert "profile teaching" in list(ds.DeidentificationMethod)
        assert "LongitudinalTemporalInformationModified" not in ds
    # Patient 0 is in the lung study's table; patient 1 is not: it gets the keyed pseudonym,
    # the same one the teaching profile gives it (one key per node).
    by_patient = {ds.PatientID for ds in lung_out}
    assert "LUNG-0042" in by_patient
    [unmapped] = by_patient - {"LUNG-0042"}
    assert unmapped in {ds.PatientID for ds in teach_out.values()}
    assert unmapped != PATIENTS[1].patient_id
    # The same object through both flows: same pseudonymous UIDs.
    assert {ds.SOPInstanceUID for ds in lung_out} <= set(teach_out)
    [dropped] = [r for r in audit if r["event"] == "dropped"]
    assert (dropped["profile"], dropped["filter"]) == ("lung", "no scouts")
    assert dropped["sop_instance_uid"].startswith("2.25.") and dropped["calling_ae_title"] == "CT_LUNG"
    [rejected] = [r for r in audit if r["event"] == "refused"]
    assert rejected["status"] == "0xC005" and "rejected by filter 'no MR'" in rejected["reason"]
    assert rejected["profile"] == "lung"
    [refused_caller] = [r for r in audit if r["event"] == "association_rejected"]
    assert refused_caller["calling_ae_title"] == "INTRUDER" and "no profile" in refused_caller["reason"]
    stored = [r for r in audit if r["event"] == "stored"]
    assert sorted(r["profile"] for r in stored) == ["lung", "lung", "teaching", "teaching", "teaching"]
    for patient in PATIENTS[:2]:
        assert patient.patient_id not in audit_text and patient.name not in audit_text


@pytest.mark.network
def test_sighup_swaps_profiles_without_losing_an_object_in_flight(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=4, images_per_series=5)
    config = _two_flow_config(tmp_path)  # maps the patient to LUNG-0042
    with Proxy(config, tmp_path) as proxy:
        results: list[list[str]] = []

        def send() -> None:
            for start in range(0, len(corpus), 2):
                results.append(storescu(proxy.port, corpus[start:start + 2], calling="CT_LUNG").statuses)

        sender = threading.Thread(target=send)
        sender.start()
        assert wait_until(lambda: len(results) >= 2, 60)
        _two_flow_config(tmp_path, lung_options="[]", lung_name="lung-v2")
        _subjects(tmp_path, f"patient_id,subject_id\n{PATIENTS[0].patient_id},LUNG-0099\n")  # reread on SIGHUP
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGHUP)
        sender.join(120)
        assert wait_until(lambda: "reload: profiles" in proxy.log(), 30), proxy.log()
        after = storescu(proxy.port, corpus[:1], calling="CT_LUNG")
        assert after.statuses == ["Success"]
        assert wait_until(lambda: len(_outputs(tmp_path / "lung")) == len(corpus), 60)
    assert [s for batch in results for s in batch] == ["Success"] * len(corpus)
    outputs = [dcmread(p) for p in _outputs(tmp_path / "lung")]
    # Every object is there, each de-identified wholly under one configuration: the old profile
    # with the old subject table, or the new with the new; the newest under the new one.
    versions = {(("profile lung-v2" in list(ds.DeidentificationMethod)), str(ds.PatientID)) for ds in outputs}
    assert versions <= {(False, "LUNG-0042"), (True, "LUNG-0099")}, versions
    assert (True, "LUNG-0099") in versions
    assert "reload rejected" not in proxy.log()


def test_two_flow_example_config_is_accepted_by_check_config(tmp_path: Path) -> None:
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "subjects.example.csv").chmod(0o600)
    result = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "check-config", "--config", "conf/two-flows.toml"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert "2 profile(s)" in result.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "show-policy", "--config", "conf/two-flows.toml", "--profile",
         "lung-screening"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert shown.returncode == 0 and shown.stdout.startswith("# profile: lung-screening\n")
    assert "retain_longitudinal_modified_dates" in shown.stdout.splitlines()[1]


def test_shipped_commented_filters_are_valid_when_uncommented(tmp_path: Path) -> None:
    text = (REPO / "conf" / "dicom-proxy.toml").read_text()
    block = text[text.index("# [[deidentify.filters]]"):text.index("# filters_default")]
    uncommented = re.sub(r"(?m)^# ?", "", block)
    config = text.replace("[spool]", uncommented + "\n[spool]", 1)
    config = config.replace('rules_file = "conf/pixel-rules.toml"', f'rules_file = "{REPO}/conf/pixel-rules.toml"')
    path = tmp_path / "c.toml"
    path.write_text(config)
    filters = load_config(path).deidentify.filters.filters
    assert [f.name for f in filters] == ["no dose reports", "no screen captures", "no scout or localizer images"]
    assert {f.action for f in filters} == {FilterAction.DROP}


def test_offline_deidentify_uses_the_chosen_profile(tmp_path: Path) -> None:
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "subjects.example.csv").chmod(0o600)
    corpus = write_corpus(tmp_path / "in", patients=2, series_per_study=1, images_per_series=1)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dicom_proxy", *args, "--config", "conf/two-flows.toml"],
            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    assert run("init").returncode == 0  # the offline command reads the key, never creates it
    ambiguous = run("deidentify", "--output", "out", *map(str, corpus))
    assert ambiguous.returncode == 2 and "choose one with --profile" in ambiguous.stderr
    lung = run("deidentify", "--profile", "lung-screening", "--output", "lung", *map(str, corpus))
    # Patient 0 is enrolled (LUNG-0042); patient 1 is not, and the profile refuses unmapped ones.
    assert lung.returncode == 1 and "summary: 1 written, 1 refused," in lung.stdout
    assert "0 dropped by filters" in lung.stdout
    assert [dcmread(p).PatientID for p in (tmp_path / "lung").rglob("*.dcm")] == ["LUNG-0042"]
    teaching = run("deidentify", "--profile", "teaching", "--output", "teach", *map(str, corpus))
    # Not ultrasound: filters_default = "reject".
    assert teaching.returncode == 1 and "summary: 0 written, 2 refused" in teaching.stdout
    assert "0xC005" in teaching.stderr


def test_a_drop_in_a_worker_process_comes_back_as_dropped(tmp_path: Path) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from dicom_proxy import workers
    from dicom_proxy.models import ReceivedObject

    profiles = _engine_for(tmp_path, """
[[deidentify.filters]]
name = "no scouts"
action = "drop"
match = { ImageType = { contains = "LOCALIZER" } }
""").with_workers(1)
    try:
        scout = ct_dataset()
        scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, scout)  # as a C-STORE carries it, Explicit VR Little Endian
        received = ReceivedObject(buffer.getvalue(), "1.2.840.10008.1.2.1", str(scout.SOPClassUID), "CT")
        engine = profiles.named(None).engine
        assert isinstance(engine, workers.PooledEngine)
        with pytest.raises(Dropped) as dropped:
            engine.deidentify_received(received)
        assert dropped.value.filter_name == "no scouts" and dropped.value.identity is not None
    finally:
        profiles.close()
