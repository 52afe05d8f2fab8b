"""Delivery: one worker per destination drains that destination's spool queue.

    worker.Forwarder --SpoolEntry--> sender (dicom.DicomSender | folder.FolderSender) --> Outcome

A sender answers every object with an `Outcome` classified by what happened, never by the type
of an exception (outcome.py); the worker acts on it: delete the entry, quarantine it, or back
off and retry (backoff.py). A dead destination only ever delays its own queue.
"""

from __future__ import annotations

from dicom_proxy.forward.outcome import Delivery, Outcome, Sender
from dicom_proxy.forward.worker import Forwarder, WorkSignal, make_sender, run_forwarders

__all__ = ["Delivery", "Forwarder", "Outcome", "Sender", "WorkSignal", "make_sender", "run_forwarders"]
