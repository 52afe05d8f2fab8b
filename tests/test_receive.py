"""receive: the SCP's supported contexts (every storage class, every syntax) copy independently."""

from __future__ import annotations

import copy

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_proxy.config import NodeConfig
from dicom_proxy.receive import _cheaply_copied, build_ae


def test_every_storage_class_and_verification_are_supported() -> None:
    ae = build_ae(NodeConfig())
    abstract = {str(c.abstract_syntax) for c in ae.supported_contexts}
    assert "1.2.840.10008.1.1" in abstract  # Verification
    assert CTImageStorage in abstract
    assert len(abstract) > 150
    assert all(ExplicitVRLittleEndian in c.transfer_syntax for c in ae.supported_contexts)


def test_per_association_copies_do_not_share_state() -> None:
    original = _cheaply_copied(build_ae(NodeConfig()).supported_contexts[0])
    clone = copy.deepcopy([original])[0]
    clone.transfer_syntax.append("1.2.3")  # type: ignore[arg-type]
    clone.result = 0
    clone.context_id = 7
    assert "1.2.3" not in original.transfer_syntax
    assert original.result is None and original.context_id is None
    assert clone.abstract_syntax == original.abstract_syntax
