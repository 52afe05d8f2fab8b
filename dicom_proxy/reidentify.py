"""`dicom-proxy reidentify`: restore original attributes for an authorised key holder.

Reads de-identified Part 10 files, decrypts the Encrypted Attributes Sequence (0400,0500) with
the recipient's private key (deidentify/encrypt.py, PS3.15 E.1.2 re-identifier) and either
writes the re-identified objects (`--output DIR`, files 0600 in folders 0700, named by the
pseudonymous UIDs the inputs carry, never by original values) or prints the original
attributes (`--show`). An object not encrypted for this key is refused by name of the reason.
Exit codes as for `deidentify`: 0 all restored, 1 some refused, 2 usage error.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography import x509
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_proxy.deidentify.encrypt import ReidentifyError, decrypt_attributes, load_private_key, restore

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def reidentify_command(
    key_path: Path,
    certificate_path: Path | None,
    output: Path | None,
    inputs: list[Path],
    iter_inputs: Callable[[list[Path]], Iterator[Path]],
) -> int:
    try:
        key = load_private_key(key_path)
        certificate = _certificate(certificate_path) if certificate_path is not None else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    missing = [i for i, p in enumerate(inputs, 1) if not p.exists()]
    if missing:
        print(f"error: input argument(s) {', '.join(map(str, missing))} do not exist", file=sys.stderr)
        return EXIT_USAGE
    restored = refused = 0
    for number, path in enumerate(iter_inputs(inputs), 1):
        try:
            dataset = _read(path)
            originals = decrypt_attributes(dataset, key, certificate)
        except ReidentifyError as exc:
            refused += 1
            print(f"refused: input file #{number}: {exc}", file=sys.stderr)
            continue
        restored += 1
        if output is None:
            _show(number, originals)
        else:
            print(f"written: {_write(output, dataset, originals)}")
    where = f", output in {output}" if output is not None else ""
    print(f"summary: {restored} restored, {refused} refused{where}", file=sys.stderr if output is None else sys.stdout)
    return EXIT_REFUSED if refused else EXIT_OK


def _certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValueError("--certificate: not an X.509 certificate") from None


def _read(path: Path) -> Dataset:
    try:
        return dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        raise ReidentifyError("not a readable DICOM Part 10 file") from None


def _show(number: int, originals: Dataset) -> None:
    print(f"input file #{number}: {len(originals)} original attribute(s)")
    for line in str(originals).splitlines():
        print(f"  {line}")


def _write(output: Path, dataset: Dataset, originals: Dataset) -> Path:
    # Named by the pseudonymous identity the input carries (read before restoring).
    names = [str(dataset.get(keyword, "")).strip("\x00 ") for keyword in _NAMING]
    relative = Path(*(name if _UID.fullmatch(name) else "unknown" for name in names)).with_suffix(".dcm")
    restore(dataset, originals)
    target = output / relative
    _private_dirs(output, relative.parent.parts)
    temporary = target.with_name(f".{target.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        dataset.save_as(handle, enforce_file_format=True)
    os.replace(temporary, target)
    return relative


_NAMING = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1; anything else never becomes a path


def _private_dirs(root: Path, parts: Iterable[str]) -> None:
    """Re-identified objects carry PHI again: folders 0700."""
    path = root
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in parts:
        path = path / part
        path.mkdir(mode=0o700, exist_ok=True)
