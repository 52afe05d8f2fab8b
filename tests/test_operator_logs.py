"""What an operator reads in the log (issue 15, item 7), with a pynetdicom SCU as the sender:
accepted and rejected associations, a refusal with its Error Comment at the sender, and the
per-association summary; all JSON, all PHI-free, pseudonyms a coordinator can derive again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from dicom_proxy import trace
from tests.dicomfactory import PATIENT_ID, PATIENT_NAME, SOP_UID, STUDY_UID, ct_dataset
from tests.netpeers import Proxy, base_config, wait_until, write_config

pytestmark = pytest.mark.network

_AUDIT_LINE = re.compile(r" (DEBUG|INFO|WARNING|ERROR) dicom_proxy\.audit: (\{.*\})$")


def audit_records(log: str) -> list[tuple[str, dict[str, Any]]]:
    """(level, record) of every audit line in a proxy log."""
    found = []
    for line in log.splitlines():
        match = _AUDIT_LINE.search(line)
        if match:
            found.append((match.group(1), json.loads(match.group(2))))
    return found


def _send(port: int, datasets: list[Dataset], called: str = "DEID_PROXY") -> tuple[bool, list[Dataset]]:
    ae = AE(ae_title="MODALITY_7")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False, []
    responses = [assoc.send_c_store(ds) for ds in datasets]
    assoc.release()
    return True, responses


def test_associations_refusals_and_summary_are_logged_and_the_sender_gets_an_error_comment(tmp_path: Path) -> None:
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "archive")}
    audit_file = tmp_path / "audit.jsonl"
    raw = base_config(tmp_path, [folder], logging={"level": "INFO", "audit_file": str(audit_file)})
    raw["deidentify"]["pixels"] = {"detect": "off"}  # rules only: a burned-in image is refused
    config = write_config(tmp_path / "proxy.toml", raw)
    good = ct_dataset()
    burned = ct_dataset()
    burned.SOPInstanceUID = SOP_UID + ".9"
    burned.BurnedInAnnotation = "YES"  # no pixel rule cleans it, detection off: refused 0xC003
    with Proxy(config, tmp_path) as proxy:
        established, _ = _send(proxy.port, [good], called="NOT_THE_PROXY")
        assert not established
        established, responses = _send(proxy.port, [good, burned])
        assert established
        assert [int(r.Status) for r in responses] == [0x0000, 0xC003]
        comment = str(responses[1].ErrorComment)
        assert "pixel" in comment.lower() and len(comment) <= 64
        assert "ErrorComment" not in responses[0]
        assert wait_until(lambda: '"association_ended"' in proxy.log() and '"forwarded"' in proxy.log(), 10)
        log = proxy.log()

    key = bytes.fromhex((tmp_path / "secret.key").read_text().strip())
    expected = trace.derive(key, patient_id=PATIENT_ID, study_instance_uid=STUDY_UID, sop_instance_uid=SOP_UID + ".9",
                            accession=str(good.AccessionNumber))
    records = audit_records(log)
    by_event: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for level, record in records:
        by_event.setdefault(record["event"], []).append((level, record))

    [(level, rejected)] = by_event["association_rejected"]
    assert level == "WARNING"
    assert rejected["called_ae_title"] == "NOT_THE_PROXY" and rejected["calling_ae_title"] == "MODALITY_7"
    assert "node.ae_title" in rejected["reason"] and rejected["peer"].startswith("127.0.0.1:")

    [(level, accepted)] = by_event["association_accepted"]
    assert level == "INFO" and accepted["called_ae_title"] == "DEID_PROXY"

    [(level, refused)] = by_event["refused"]
    assert level == "WARNING" and refused["status"] == "0xC003"
    assert refused["sop_instance_uid"] == expected.sop_instance_uid
    assert refused["study_instance_uid"] == expected.study_instance_uid
    assert refused["patient_id"] == expected.patient_id and refused["accession"] == expected.accession
    assert refused["association"] == accepted["association"] and refused["calling_ae_title"] == "MODALITY_7"

    [(level, stored)] = by_event["stored"]
    assert stored["study_instance_uid"] == expected.study_instance_uid
    assert stored["patient_id"] == expected.patient_id

    [(level, ended)] = by_event["association_ended"]
    assert level == "WARNING"  # it carried a refusal
    assert (ended["received"], ended["stored"], ended["refused"]) == (2, 1, 1)
    assert ended["refused_by_status"] == {"0xC003": 1} and ended["ended_by"] == "release"

    for original in (PATIENT_ID, STUDY_UID, SOP_UID, *PATIENT_NAME.split("^"), str(good.AccessionNumber)):
        assert original not in log


def test_pseudonym_command_prints_what_one_grep_of_the_audit_finds(tmp_path: Path) -> None:
    """A coordinator holding the original Study UID, Patient ID and accession number asks where
    the study went: the command prints the pseudonyms and a grep that finds every record."""
    test_associations_refusals_and_summary_are_logged_and_the_sender_gets_an_error_comment(tmp_path)
    accession = str(ct_dataset().AccessionNumber)
    command = [sys.executable, "-m", "dicom_proxy", "pseudonym", "--config", str(tmp_path / "proxy.toml"),
               "--study-uid", STUDY_UID, "--patient-id", PATIENT_ID, "--accession", accession]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for original in (STUDY_UID, PATIENT_ID, accession):
        assert original not in result.stdout
    key = bytes.fromhex((tmp_path / "secret.key").read_text().strip())
    expected = trace.derive(key, patient_id=PATIENT_ID, study_instance_uid=STUDY_UID, accession=accession)
    assert f"study_instance_uid  {expected.study_instance_uid}" in result.stdout
    assert f"patient_id          {expected.patient_id}" in result.stdout
    [grep] = [line.removeprefix("find them: ") for line in result.stdout.splitlines() if line.startswith("find them:")]
    found = subprocess.run(grep, shell=True, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    events = [json.loads(line)["event"] for line in found.stdout.splitlines()]
    assert sorted(events) == ["forwarded", "refused", "stored"]
    as_json = json.loads(subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert as_json["accession"] == expected.accession and as_json["patient_name"] == f"ANON^{expected.patient_id[:8]}"
