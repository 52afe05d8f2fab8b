"""The folder destination: `<path>/<Study>/<Series>/<SOP>.dcm`, named by the new identity."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from dicom_proxy import part10
from dicom_proxy.config import FolderDestination
from dicom_proxy.durable import fsync_dir, make_dirs_durable
from dicom_proxy.forward.outcome import Delivery, Outcome
from dicom_proxy.models import SpoolEntry, is_valid_uid


class FolderSender:
    """Copies each stored file as it is (temp file, fsync, rename): no decode, no re-encode."""

    def __init__(self, destination: FolderDestination) -> None:
        self.root = destination.path

    def expect(self, entries: Sequence[SpoolEntry]) -> None:
        """Nothing to prepare: each file is copied as it is."""

    def send(self, entry: SpoolEntry) -> Outcome:
        identity = part10.read_identity(entry.path)
        if identity is None:
            return Outcome(Delivery.CANNOT_CONVERT, "stored file header does not parse")
        uids = (identity.study_instance_uid, identity.series_instance_uid, identity.sop_instance_uid)
        if not all(is_valid_uid(uid) for uid in uids):
            # These become path components: only digits and dots may (PS3.5 9.1).
            return Outcome(Delivery.CANNOT_CONVERT, "stored file has an invalid UID")
        folder = self.root.joinpath(*uids[:2])
        target = folder / f"{uids[2]}.dcm"
        temporary = folder / f".{target.name}.tmp"
        try:
            make_dirs_durable(folder)
            shutil.copyfile(entry.path, temporary)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            fsync_dir(folder)
        except OSError as exc:
            # Disk full, permissions, a vanished mount: the folder may recover, keep the entry.
            return Outcome(Delivery.TRANSIENT, f"cannot write to folder ({exc.strerror})")
        return Outcome(Delivery.DELIVERED)

    def close(self) -> None:
        """Nothing is held open between objects."""
