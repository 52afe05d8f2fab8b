"""`dicom-proxy spool status|list|retry|purge`: the operator's view of queues and quarantine.

`status` is one line per destination (state, queue, oldest entry, quarantine, down since, last
error); `list` one line per entry, tab-separated fields that never contain a tab or newline;
both take `--json` for scripts. `retry` and `purge` change the spool, so they are audited
(`quarantine_retried`, `quarantine_purged`, with the operator's user name).
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path

from dicom_proxy import audit
from dicom_proxy.spool import REASON_SUFFIX, Spool
from dicom_proxy.spool_state import QueueReport, entry_time, report


def _clock(when: float | None) -> str:
    return "-" if when is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def status_lines(reports: list[QueueReport], now: float) -> list[str]:
    rows = [("destination", "state", "queued", "bytes", "oldest", "quarantined", "down since", "last error")]
    for r in reports:
        s = r.state
        state = str(s.state)
        if s.retry_at is not None and s.state.value == "backing off":
            state += f" (retry in {_age(s.retry_at - now)}, {s.failures} failed)"
        error = "-"
        if s.last_error:
            error = f"{_clock(s.last_error_at)} {_one_line(s.last_error)}"
        rows.append(
            (r.destination, state, str(r.queued), str(r.queued_bytes), _age(r.oldest_age_seconds),
             str(r.quarantined), _clock(s.down_since), error)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip() for row in rows]


def _reason(path: Path) -> tuple[str, int | None]:
    """The PHI-free reason and status recorded beside a quarantined entry."""
    try:
        raw = json.loads(Path(str(path) + REASON_SUFFIX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "", None
    status = raw.get("status") if isinstance(raw, dict) else None
    reason = raw.get("reason", "") if isinstance(raw, dict) else ""
    return _one_line(str(reason)), status if isinstance(status, int) else None


def list_entries(spool: Spool, now: float) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for name in spool.destinations:
        for entry in spool.pending(name) if spool.queue_dir(name).is_dir() else []:
            entries.append(
                {"destination": name, "where": "queued", "entry": entry.path.name, "bytes": entry.size,
                 "age_seconds": round(now - entry_time(entry.path), 1), "status": None, "reason": ""}
            )
        for path in spool.quarantined(name):
            reason, status = _reason(path)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            entries.append(
                {"destination": name, "where": "quarantined", "entry": path.name, "bytes": size,
                 "age_seconds": round(now - entry_time(path), 1), "status": status, "reason": reason}
            )
    return entries


def _list_line(entry: dict[str, object]) -> str:
    status = entry["status"]
    fields = [
        str(entry["destination"]), str(entry["where"]), str(entry["entry"]), str(entry["bytes"]),
        _age(float(entry["age_seconds"])),  # type: ignore[arg-type]
        f"0x{status:04X}" if isinstance(status, int) else "-",
        str(entry["reason"]) or "-",
    ]
    return "\t".join(field.replace("\t", " ") for field in fields)


def run(spool: Spool, action: str, as_json: bool) -> list[str]:
    """The lines `dicom-proxy spool ACTION` prints."""
    now = time.time()
    if action == "status":
        reports = report(spool, now)
        if as_json:
            return [json.dumps([r.to_json() for r in reports], indent=1)]
        return status_lines(reports, now)
    if action == "list":
        entries = list_entries(spool, now)
        if as_json:
            return [json.dumps(entries, indent=1)]
        return [_list_line(e) for e in entries]
    lines = []
    results: list[dict[str, object]] = []
    for name in spool.destinations:
        if action == "retry":
            count = spool.retry_quarantined(name)
            audit.emit(audit.QuarantineRetried(destination=name, entries=count, user=_user()))
            lines.append(f"{name}: {count} quarantined entries queued again")
        else:
            count = spool.purge_quarantined(name)
            audit.emit(audit.QuarantinePurged(destination=name, entries=count, user=_user()))
            lines.append(f"{name}: {count} quarantined entries deleted")
        results.append({"destination": name, "action": action, "entries": count})
    return [json.dumps(results, indent=1)] if as_json else lines


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
