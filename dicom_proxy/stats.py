"""`dicom-proxy stats`: counts per day and per source from the audit log, for the monthly
report a privacy officer asks for (how much came in, how much was refused and why, how much
left for each destination).

Reads the JSON lines of `[logging] audit_file` (also rotated and gzip'ed copies). The source of
an object is the Calling AE Title that sent it; a forwarded object is attributed to the source
that sent it by its pseudonymous SOP Instance UID. Everything read is already PHI-free.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

UNKNOWN_SOURCE = "(unknown)"


@dataclass
class DayCounts:
    """One (day, source) row."""

    received: int = 0
    stored: int = 0
    refused: int = 0
    forwarded: int = 0


@dataclass
class Report:
    """Counts by (day, source), refusals by (day, source, status, reason), forwarded by
    (day, destination); `skipped` counts lines that were not audit records."""

    rows: dict[tuple[date, str], DayCounts] = field(default_factory=dict)
    refusals: Counter[tuple[date, str, str, str]] = field(default_factory=Counter)
    destinations: Counter[tuple[date, str]] = field(default_factory=Counter)
    skipped: int = 0

    def row(self, day: date, source: str) -> DayCounts:
        return self.rows.setdefault((day, source), DayCounts())


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_records(paths: Iterable[Path]) -> Iterator[dict[str, Any] | None]:
    """Each line's record; None for a line that is not a JSON object with `time` and `event`."""
    for path in paths:
        with _open(path) as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    yield None
                    continue
                if isinstance(record, dict) and isinstance(record.get("time"), (int, float)) and "event" in record:
                    yield record
                else:
                    yield None


def _status(value: object) -> str:
    """`0xC003` whether the log wrote it as hex text or (older lines) as an integer."""
    if isinstance(value, int):
        return f"0x{value:04X}"
    return str(value) if value else "-"


def build_report(
    records: Iterable[dict[str, Any] | None], first: date | None = None, last: date | None = None, utc: bool = False
) -> Report:
    report = Report()
    sources: dict[str, str] = {}  # pseudonymous SOP Instance UID -> source that sent it

    def day_of(record: dict[str, Any]) -> date:
        moment = datetime.fromtimestamp(float(record["time"]), UTC)
        return moment.date() if utc else moment.astimezone().date()

    for record in records:
        if record is None:
            report.skipped += 1
            continue
        event = record["event"]
        day = day_of(record)
        source = str(record.get("calling_ae_title") or "") or UNKNOWN_SOURCE
        if event == "stored" and record.get("sop_instance_uid"):
            sources[str(record["sop_instance_uid"])] = source
        if (first is not None and day < first) or (last is not None and day > last):
            continue
        if event == "stored":
            row = report.row(day, source)
            row.received += 1
            row.stored += 1
        elif event == "refused":
            row = report.row(day, source)
            row.received += 1
            row.refused += 1
            report.refusals[(day, source, _status(record.get("status")), str(record.get("reason", "")))] += 1
        elif event == "forwarded":
            origin = sources.get(str(record.get("sop_instance_uid") or ""), UNKNOWN_SOURCE)
            report.row(day, origin).forwarded += 1
            report.destinations[(day, str(record.get("destination", "")))] += 1
    return report


def format_text(report: Report) -> str:
    lines = [f"{'day':<10}  {'source':<16} {'received':>9} {'stored':>9} {'refused':>9} {'forwarded':>9}"]
    totals = DayCounts()
    for (day, source), row in sorted(report.rows.items()):
        lines.append(
            f"{day.isoformat():<10}  {source:<16} {row.received:>9} {row.stored:>9} {row.refused:>9} {row.forwarded:>9}"
        )
        totals.received += row.received
        totals.stored += row.stored
        totals.refused += row.refused
        totals.forwarded += row.forwarded
    lines.append(
        f"{'total':<10}  {'':<16} {totals.received:>9} {totals.stored:>9} {totals.refused:>9} {totals.forwarded:>9}"
    )
    lines.append("")
    lines.append("refused, by reason:")
    if not report.refusals:
        lines.append("  none")
    for (day, source, status, reason), count in sorted(report.refusals.items()):
        lines.append(f"  {day.isoformat()}  {source:<16} {status}  {count:>6}  {reason}")
    lines.append("")
    lines.append("forwarded, by destination:")
    if not report.destinations:
        lines.append("  none")
    for (day, destination), count in sorted(report.destinations.items()):
        lines.append(f"  {day.isoformat()}  {destination:<16} {count:>6}")
    if report.skipped:
        lines.append("")
        lines.append(f"({report.skipped} line(s) that are not audit records were skipped)")
    return "\n".join(lines)


def format_csv(report: Report) -> str:
    """One table: kind, day, source or destination, status, reason, count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "day", "source", "status", "reason", "count"])
    for (day, source), row in sorted(report.rows.items()):
        for kind, count in (
            ("received", row.received),
            ("stored", row.stored),
            ("refused", row.refused),
            ("forwarded", row.forwarded),
        ):
            if count:
                writer.writerow([kind, day.isoformat(), source, "", "", count])
    for (day, source, status, reason), count in sorted(report.refusals.items()):
        writer.writerow(["refused_by_reason", day.isoformat(), source, status, reason, count])
    for (day, destination), count in sorted(report.destinations.items()):
        writer.writerow(["forwarded_to", day.isoformat(), destination, "", "", count])
    return out.getvalue()
