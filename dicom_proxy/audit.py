"""Structured, PHI-free audit records (one JSON object per line).

Callers pass only pseudonymous UIDs, spool entry names, destination names, status codes and
reasons built from attribute paths: never an original value.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

_logger = logging.getLogger("dicom_proxy.audit")


def configure(audit_file: Path | None) -> None:
    """Send audit records to `audit_file` (appended) in addition to the normal log."""
    for handler in list(_logger.handlers):
        _logger.removeHandler(handler)
        handler.close()
    if audit_file is not None:
        audit_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(audit_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)


def record(event: str, **fields: object) -> None:
    _logger.info(json.dumps({"time": round(time.time(), 3), "event": event, **fields}, sort_keys=True))
