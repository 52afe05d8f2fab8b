"""The secret key that makes pseudonyms consistent across nodes (DESIGN.md, promise 3).

Stored as 64 hex characters (32 random bytes) in a file readable by the owner only.
Its value is never logged.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32


class SecretKeyError(Exception):
    """The key file is unusable; the message never contains the key."""


def fingerprint(key: bytes) -> str:
    """A short public fingerprint of the key (SHA-256 of a labelled key, 16 hex digits): shows
    in the log which key is in use, so a changed key is visible. Reveals nothing of the key."""
    digest = hashlib.sha256(b"dicom-proxy key fingerprint\x00" + key).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def load_key(path: Path) -> bytes:
    try:
        info = path.stat()
    except OSError as exc:
        raise SecretKeyError(f"{path}: cannot read secret key file ({exc.strerror})") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(
            f"{path}: secret key file is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SecretKeyError(f"{path}: secret key file must hold hexadecimal digits") from None
    if len(key) < 16:
        raise SecretKeyError(f"{path}: secret key must be at least 16 bytes (32 hex digits)")
    return key


def create_key(path: Path) -> bytes:
    """Write a new random key to `path` (mode 0600; never over an existing file) and return it.

    Only `dicom-proxy init` and serve's very first start call this (see preflight.py).
    Raises OSError when the file or its folder cannot be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
