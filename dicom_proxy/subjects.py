"""Subject IDs from the study team's lookup table (`[profiles.subjects] file = "subjects.csv"`).

The CSV maps an original Patient ID within its issuer (Issuer of Patient ID, (0010,0021)) to a
study subject ID and optionally a subject name, which then replace the keyed pseudonyms of
Patient ID and Patient's Name. The file holds identities: like the secret key it must be
readable by its owner only, and no message ever quotes its content (problems name the line).

```csv
patient_id,issuer,subject_id,subject_name
MRN4417823,HOSP_A,LUNG-0042,LUNG^0042
```
`issuer` and `subject_name` are optional columns. A row with an empty issuer matches objects
without an Issuer of Patient ID only.
"""

from __future__ import annotations

import csv
import io
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

# PS3.5 6.2: LO (Patient ID) and each PN component group are at most 64 characters, no
# backslash or control characters.
_MAX_LENGTH = 64
_REQUIRED_COLUMNS = ("patient_id", "subject_id")
_COLUMNS = ("patient_id", "issuer", "subject_id", "subject_name")


@dataclass(frozen=True)
class Subject:
    """What a mapped patient is called in the output."""

    subject_id: str
    subject_name: str  # empty: the subject ID is used as Patient's Name


@dataclass(frozen=True)
class SubjectTable:
    """(issuer, original Patient ID) -> Subject; built once, read concurrently."""

    subjects: MappingProxyType[tuple[str, str], Subject] = field(default_factory=lambda: MappingProxyType({}))

    def lookup(self, issuer: str, patient_id: str) -> Subject | None:
        return self.subjects.get((issuer.strip(), patient_id.strip()))

    def __len__(self) -> int:
        return len(self.subjects)


@dataclass(frozen=True)
class SubjectsConfig:
    """`[profiles.subjects]`: the table file, what to do with unmapped patients, the table
    itself (read by load_config; reread on SIGHUP)."""

    file: Path
    unmapped: Literal["pseudonym", "refuse"] = "pseudonym"
    table: SubjectTable | None = None


def load_subjects(path: Path, key: str, problems: list[str]) -> SubjectTable | None:
    """Read and validate the table; append problems (key path and line, never a value)."""
    try:
        info = path.stat()
    except OSError as exc:
        problems.append(f"{key}: {path}: cannot read ({exc.strerror})")
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(
            f"{key}: {path}: holds identities but is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{key}: {path}: cannot read as UTF-8 ({type(exc).__name__})")
        return None
    before = len(problems)
    subjects: dict[tuple[str, str], Subject] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or ()]
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in _COLUMNS]
    if missing or unknown or len(set(columns)) != len(columns):
        problems.append(
            f"{key}: {path}: the first line must name the columns {', '.join(_COLUMNS)} "
            "(issuer and subject_name optional, each once)"
        )
        return None
    reader.fieldnames = columns
    try:
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                problems.append(f"{key}: {path}: line {line}: wrong number of fields")
                continue
            values = {name: (row.get(name) or "").strip() for name in _COLUMNS}
            if not any(values.values()):
                continue  # blank line
            for name in ("patient_id", "subject_id", "issuer", "subject_name"):
                if not _valid(values[name], required=name in _REQUIRED_COLUMNS):
                    problems.append(
                        f"{key}: {path}: line {line}: {name} must be 1-{_MAX_LENGTH} characters without "
                        "backslash or control characters" + ("" if name in _REQUIRED_COLUMNS else " (or empty)")
                    )
            identity = (values["issuer"], values["patient_id"])
            if identity in subjects:
                problems.append(f"{key}: {path}: line {line}: the same patient (issuer and patient_id) again")
            subjects[identity] = Subject(values["subject_id"], values["subject_name"])
    except csv.Error as exc:
        problems.append(f"{key}: {path}: not valid CSV ({type(exc).__name__})")
    if len(problems) > before:
        return None
    return SubjectTable(MappingProxyType(subjects))


def _valid(value: str, required: bool) -> bool:
    if not value:
        return not required
    return len(value) <= _MAX_LENGTH and "\\" not in value and all(ch >= " " and ch != "\x7f" for ch in value)
