"""Writes that survive a power loss: fsync the file, then the directory that names it."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (files created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(folder: Path, mode: int = 0o777) -> None:
    """mkdir -p, fsync'ing the parent of every folder created, so a file written below
    survives a power loss even on file systems that do not order directory updates."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(mode=mode, exist_ok=True)
        fsync_dir(path.parent)
