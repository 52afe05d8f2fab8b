"""Verify's own reader of the output (dicom_proxy/deidentify/elements.py): on every adversarial
object, verify checks exactly the values it checked when pydicom read the output; what the
reader does not take (implicit VR, UN, broken lengths) goes to pydicom; a value hidden deep in
undefined-length items is still found."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from dicom_proxy import part10
from dicom_proxy.deidentify import verify as verify_module
from dicom_proxy.deidentify.elements import Unusual, read_output
from dicom_proxy.deidentify.plan import make_plan
from dicom_proxy.deidentify.text.vocabulary import shipped
from dicom_proxy.models import ReceivedObject, Refused
from dicom_proxy.policy import compile_policy
from tests.adversarial import OPTION_SETS, corpus
from tests.dicomfactory import KEY, ct_dataset, engine, item_with

Check = tuple[str, int, str, str, int, bool]


class _Recorder:
    """Records every value verify checks (value, tag, VR, path, rule, top level) and whether
    the reader took the object, for one verify call at a time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pydicom_only: bool) -> None:
        self.checks: list[Check] = []
        original = verify_module._Checker._check

        def check(checker: object, text: str, tag: int, vr: str, path: str, rule: object, top: bool) -> None:
            for value in text.split("\\"):
                if value.strip(" \x00"):
                    self.checks.append((value.strip(" \x00"), tag, vr, path, id(rule), top))
            original(checker, text, tag, vr, path, rule, top)  # type: ignore[arg-type]

        monkeypatch.setattr(verify_module._Checker, "_check", check)
        if pydicom_only:
            monkeypatch.setattr(verify_module, "read_output", _unusual)


def _unusual(*args: object) -> None:
    raise Unusual("pydicom reads this one")


def _checks(encoded: part10.Encoded, context: object, monkeypatch: pytest.MonkeyPatch, pydicom: bool) -> tuple:
    with monkeypatch.context() as patch:
        recorder = _Recorder(patch, pydicom)
        try:
            verify_module.verify(encoded, context)  # type: ignore[arg-type]
            refusal = None
        except Refused as refused:
            refusal = refused.reason
    return sorted(recorder.checks), refusal


def _outputs() -> Iterator[tuple[part10.Encoded, object]]:
    """(output, context) of every adversarial object under every option set, as verify gets them."""
    from dicom_proxy.deidentify import engine as engine_module

    handed: list[tuple[part10.Encoded, object]] = []
    original = engine_module.verify

    def capture(encoded: part10.Encoded, context: object) -> None:
        handed.append((encoded, context))
        original(encoded, context)  # type: ignore[arg-type]

    engine_module.verify = capture  # type: ignore[assignment]
    try:
        for options in OPTION_SETS.values():
            running = engine(*options)
            for case in corpus():
                for sent in case.build():
                    try:
                        running.deidentify_received(
                            ReceivedObject(sent.body, sent.transfer_syntax, sent.sop_class_uid, "T")
                        )
                    except Refused:
                        pass
    finally:
        engine_module.verify = original  # type: ignore[assignment]
    yield from handed


def test_verify_checks_the_same_values_as_with_pydicom_on_every_adversarial_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read, compared = 0, 0
    for encoded, context in _outputs():
        fast = _checks(encoded, context, monkeypatch, pydicom=False)
        slow = _checks(encoded, context, monkeypatch, pydicom=True)
        assert fast == slow
        compared += 1
        try:
            read_output(verify_module._searched_parts(encoded))
            read += 1
        except Unusual:
            pass
    assert compared > 500
    assert read > 0.8 * compared  # the reader takes the usual outputs; pydicom the rest


def _part10(ds: Dataset) -> list[bytes | memoryview]:
    return list(part10.encode(ds).parts)


def test_implicit_vr_output_goes_to_pydicom_and_is_still_verified() -> None:
    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    encoded = part10.encode(ds)
    with pytest.raises(Unusual):
        read_output(verify_module._searched_parts(encoded))
    context = make_plan(ds, compile_policy(()), KEY, shipped())
    with pytest.raises(Refused, match="verify: an original value of"):
        verify_module.verify(encoded, context)  # the original itself: its identity is all there


def _with_element(head: bytes, element: bytes) -> list[bytes | memoryview]:
    return [head + element]


@pytest.mark.parametrize(
    "element",
    [
        struct.pack("<HH", 0x0009, 0x1010) + b"UN\0\0" + struct.pack("<I", 4) + b"ABCD",  # UN
        struct.pack("<HH", 0x0010, 0x4000) + b"LT" + struct.pack("<H", 40) + b"short",  # runs past the end
        struct.pack("<HH", 0x0010, 0x4000) + b"ZZ" + struct.pack("<H", 2) + b"AB",  # not a VR
        struct.pack("<HH", 0x0010, 0x4000) + b"UT\0\0" + struct.pack("<I", 0xFFFFFFFF) + b"AB",  # undefined
        struct.pack("<HH", 0xFFFE, 0xE000) + struct.pack("<I", 0),  # an item outside a sequence
    ],
    ids=["UN", "value past the end", "unknown VR", "undefined length text", "stray item"],
)
def test_what_the_reader_does_not_take_goes_to_pydicom(element: bytes) -> None:
    ds = Dataset()
    ds.file_meta = part10.FileMetaDataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "2.25.1"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    (head,) = _part10(ds)
    with pytest.raises(Unusual):
        read_output(_with_element(bytes(head), element))


def test_a_name_deep_in_undefined_length_items_is_found_by_the_reader() -> None:
    context = make_plan(ct_dataset(), compile_policy(()), KEY, shipped())  # the original's identity
    output = Dataset()  # an output with nothing of it but one name, three items deep
    output.file_meta = part10.FileMetaDataset()
    output.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    output.SOPClassUID, output.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", "2.25.7"
    inner = item_with(TextValue="reviewed")
    inner.ContentSequence = Sequence([item_with(TextValue="nothing"), item_with(TextValue="again Holloway")])
    middle = item_with(TextValue="outer")
    middle.ContentSequence = Sequence([inner])
    output.ContentSequence = Sequence([middle])
    for holder in (output, middle, inner):
        holder["ContentSequence"].is_undefined_length = True
        for each in holder.ContentSequence:
            each.is_undefined_length_sequence_item = True
    encoded = part10.encode(output)
    _, dataset = read_output(verify_module._searched_parts(encoded))  # taken, not handed to pydicom
    content = next(e for e in dataset.elements if e.tag == 0x0040A730)
    assert content.items[0].elements[-1].items[0].elements[-1].items[1].elements[-1].value.startswith(b"again")
    with pytest.raises(Refused, match=r"\(ContentSequence\[0\]\.ContentSequence\[0\]\.ContentSequence\[1\]\.TextValue\)"):
        verify_module.verify(encoded, context)
