"""What a sender reports for one object, as RSNA CTP's OK / FAIL / RETRY with FAIL split in two.

The class is decided where the fact is known (a status from the destination, a negotiation
result, a decoder's verdict), never from the type of an exception caught far away: an
unexpected exception is not an outcome and is handled by the worker (logged, entry kept).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dicom_proxy.models import SpoolEntry


class Delivery(enum.Enum):
    # The destination answered Success or Warning (PS3.7 C) for an object sent on a
    # presentation context accepted for the syntax it is encoded in: delete the entry.
    DELIVERED = "delivered"
    # The destination said no for good: a failure status (0xA9xx, 0xCxxx, ...) or none of the
    # transfer syntaxes this object can be sent in is accepted for its SOP class. Quarantine.
    REFUSED = "refused by destination"
    # This object cannot be put in a form the destination accepts (unreadable stored file,
    # no decoder, a stream that does not decode). Quarantine.
    CANNOT_CONVERT = "cannot convert"
    # Worth trying again later: no association, abort, timeout, 0xA7xx, a folder write error.
    TRANSIENT = "transient"


@dataclass(frozen=True)
class Outcome:
    """One object's delivery result. `reason` never carries a value from the object."""

    delivery: Delivery
    reason: str = ""
    status: int | None = None
    # The transfer syntax the object went out in (empty when it did not go out).
    transfer_syntax_uid: str = ""

    @property
    def permanent(self) -> bool:
        return self.delivery in (Delivery.REFUSED, Delivery.CANNOT_CONVERT)


class Sender(Protocol):
    """Delivers spooled files to one destination, one at a time (one worker thread)."""

    def expect(self, entries: Sequence[SpoolEntry]) -> None:
        """These entries come next: a sender may prepare (propose their contexts up front)."""
        ...

    def send(self, entry: SpoolEntry) -> Outcome: ...

    def close(self) -> None:
        """Release whatever is held open (association, files)."""
        ...
