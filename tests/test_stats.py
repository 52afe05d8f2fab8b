"""`dicom-proxy stats` on a generated audit log: the audit events' own JSON lines, over three
days and two sources, with refusals and deliveries; counts must match what was generated."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dicom_proxy import audit
from tests.netpeers import base_config, write_config

DAY0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
REASONS = {
    0xC003: "Modality (0008,0060) is listed as high risk and no pixel rule cleans it",
    0xC004: "original identifying value found in (0008,1030)",
}


def _uid(n: int) -> str:
    return f"2.25.{1000 + n}"


def _generate(seed: int = 7) -> tuple[list[audit.AuditEvent], Counter[tuple[str, str, str]]]:
    """Events and the expected counts by (day, source, kind)."""
    rng = random.Random(seed)
    events: list[audit.AuditEvent] = []
    expected: Counter[tuple[str, str, str]] = Counter()
    n = 0
    for day in range(3):
        for source in ("CT_SCANNER", "US_CART"):
            for _ in range(rng.randint(3, 9)):
                n += 1
                when = (DAY0 + timedelta(days=day, minutes=n)).timestamp()
                key = ((DAY0 + timedelta(days=day)).date().isoformat(), source)
                if rng.random() < 0.3:
                    status = rng.choice(sorted(REASONS))
                    events.append(
                        audit.ObjectRefused(
                            time=when, status=status, reason=REASONS[status], calling_ae_title=source, association=n
                        )
                    )
                    expected[(*key, "refused")] += 1
                    expected[(*key, f"0x{status:04X}")] += 1
                    continue
                events.append(
                    audit.ObjectStored(
                        time=when,
                        sop_instance_uid=_uid(n),
                        series_instance_uid=_uid(n + 500),
                        study_instance_uid=_uid(n + 900),
                        patient_id="P" + str(n),
                        accession="A" + str(n),
                        bytes=1000,
                        calling_ae_title=source,
                        association=n,
                    )
                )
                expected[(*key, "stored")] += 1
                # Delivered an hour later, same day; one object in five is still queued.
                if n % 5:
                    events.append(
                        audit.ObjectForwarded(
                            time=when + 3600, destination="research", entry=f"e{n}.dcm", sop_instance_uid=_uid(n)
                        )
                    )
                    expected[(*key, "forwarded")] += 1
    events.append(audit.NodeStopped(time=(DAY0 + timedelta(days=3)).timestamp()))
    return events, expected


def _write_log(path: Path, events: list[audit.AuditEvent]) -> None:
    path.write_text("".join(json.dumps(e.to_json()) + "\n" for e in events) + "not json\n")


def _stats(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = write_config(
        tmp_path / "proxy.toml",
        base_config(
            tmp_path,
            [{"name": "research", "type": "folder", "path": str(tmp_path / "out")}],
            logging={"level": "INFO", "audit_file": str(tmp_path / "audit.jsonl")},
        ),
    )
    return subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "stats", "--config", str(config), "--utc", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_counts_per_day_and_source_match_the_generated_log(tmp_path: Path) -> None:
    events, expected = _generate()
    # Rotation: the oldest half in a gzip'ed copy, the rest in the live file.
    half = len(events) // 2
    with gzip.open(tmp_path / "audit.jsonl.1.gz", "wt") as handle:
        handle.write("".join(json.dumps(e.to_json()) + "\n" for e in events[:half]))
    _write_log(tmp_path / "audit.jsonl", events[half:])

    result = _stats(tmp_path, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    got: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        if row["kind"] in ("stored", "refused", "forwarded"):
            got[(row["day"], row["source"], row["kind"])] += int(row["count"])
        elif row["kind"] == "received":
            stored = expected[(row["day"], row["source"], "stored")]
            refused = expected[(row["day"], row["source"], "refused")]
            assert int(row["count"]) == stored + refused
        elif row["kind"] == "refused_by_reason":
            got[(row["day"], row["source"], row["status"])] += int(row["count"])
            assert row["reason"] == REASONS[int(row["status"], 16)]
    assert got == expected
    forwarded_to = sum(int(r["count"]) for r in rows if r["kind"] == "forwarded_to" and r["source"] == "research")
    assert forwarded_to == sum(v for k, v in expected.items() if k[2] == "forwarded")

    text = _stats(tmp_path)
    assert text.returncode == 0, text.stderr
    total = next(line for line in text.stdout.splitlines() if line.startswith("total"))
    received = sum(v for k, v in expected.items() if k[2] in ("stored", "refused"))
    assert total.split()[1] == str(received)
    assert "(1 line(s) that are not audit records were skipped)" in text.stdout


def test_month_filter_and_missing_log(tmp_path: Path) -> None:
    events, _ = _generate()
    _write_log(tmp_path / "audit.jsonl", events)
    november = _stats(tmp_path, "--month", "2026-11", "--format", "csv")
    assert november.returncode == 0, november.stderr
    days = {row["day"] for row in csv.DictReader(io.StringIO(november.stdout))}
    assert days == {"2026-11-29", "2026-11-30"}
    december = _stats(tmp_path, "--from", "2026-12-01", "--to", "2026-12-01")
    assert "2026-12-01" in december.stdout and "2026-11-30" not in december.stdout
    (tmp_path / "audit.jsonl").unlink()
    missing = _stats(tmp_path)
    assert missing.returncode == 2
    assert "no audit log" in missing.stderr
