"""Encrypted Attributes for authorised re-identification (PS3.15 E.1.2 and E.3; PS3.3
C.12.1.1.4.1 Encrypted Attributes Data Set).

De-identifier (PS3.15 E.1.2 steps 1 and 4): before the engine changes anything, `snapshot`
keeps the original top-level attributes; after the tag stage, `protect` puts the original of
every attribute that was removed or whose encoded value changed (a sequence whole, when
anything inside it changed), plus SOP Instance UID always (re-identifiers such as gdcmanon
need it), into the single item of a Modified Attributes Sequence (0400,0550). That element is
encoded in Explicit VR Little Endian, encrypted as CMS EnvelopedData (cms.py: AES-256-CBC, one
fresh content key per object, RSA key transport or ECDH key agreement per recipient
certificate) and stored as Encrypted Content (0400,0520), OB, in the one item of the Encrypted
Attributes Sequence (0400,0500) with Encrypted Content Transfer Syntax UID (0400,0510). The
content key exists only in memory. Pixel Data is not carried (its size; its cleaning is not
an identity attribute): re-identification restores the header.

Re-identifier (PS3.15 E.1.2): decrypt one item with the recipient key, move every attribute of
the Modified Attributes item into the main data set, set Patient Identity Removed (0012,0062)
to NO and remove De-identification Method (0012,0063) and its Code Sequence (0012,0064), unless
the originals held them, and remove the Encrypted Attributes Sequence.
"""

from __future__ import annotations

import copy
import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian

from dicom_proxy import part10
from dicom_proxy.deidentify import cms
from dicom_proxy.part10 import Encoded

ENCRYPTED_ATTRIBUTES_SEQUENCE = Tag(0x04000500)
ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID = Tag(0x04000510)
ENCRYPTED_CONTENT = Tag(0x04000520)
MODIFIED_ATTRIBUTES_SEQUENCE = Tag(0x04000550)
SOP_INSTANCE_UID = Tag(0x00080018)
PIXEL_DATA = Tag(0x7FE00010)
PATIENT_IDENTITY_REMOVED = Tag(0x00120062)
DEIDENTIFICATION_METHOD = Tag(0x00120063)
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = Tag(0x00120064)
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = Tag(0x00280303)
# How every Encrypted Content this module reads must start: (0400,0550) SQ, Explicit VR LE.
CONTENT_START = b"\x00\x04\x50\x05SQ"


class ReidentifyError(ValueError):
    """An object cannot be re-identified (no Encrypted Attributes, or none for this key)."""


# --- recipients and keys ------------------------------------------------------------------


def load_recipient(path: Path) -> x509.Certificate:
    """A recipient certificate (PEM or DER) with an RSA or EC (P-256/384/521) key that is valid
    now; raise ValueError with a message that names no value."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as exc:
        raise ValueError(f"cannot read ({exc.strerror})") from None
    try:
        certificate = (
            x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise ValueError("not an X.509 certificate (PEM or DER)") from None
    public = certificate.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise ValueError("EC certificate must use P-256, P-384 or P-521")
    elif not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("certificate key must be RSA or EC")  # noqa: TRY004 (a config problem)
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ValueError("certificate is not valid now (expired or not yet valid)")
    return certificate


def load_private_key(path: Path) -> cms.PrivateKey:
    """An RSA or EC private key (PEM or DER, unencrypted)."""
    data = path.read_bytes()
    try:
        key = (
            serialization.load_pem_private_key(data, None)
            if b"-----BEGIN" in data
            else serialization.load_der_private_key(data, None)
        )
    except (ValueError, TypeError):
        raise ValueError("not an unencrypted RSA or EC private key") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError("private key must be RSA or EC")  # noqa: TRY004 (a usage problem)
    return key


# --- de-identifier: snapshot, protect ------------------------------------------------------


@dataclass(frozen=True)
class Protected:
    """What `protect` stored: the Encrypted Content value and how many attributes it holds."""

    encrypted_content: bytes
    attributes: int


class AttributeEncryptor:
    """Encrypts the originals of modified attributes for a fixed set of recipients."""

    def __init__(self, recipients: Sequence[x509.Certificate]) -> None:
        if not recipients:
            raise ValueError("no recipients")
        self.recipients = tuple(recipients)

    @staticmethod
    def snapshot(dataset: Dataset) -> Dataset:
        """The original top-level attributes (raw ones shared: they are immutable)."""
        originals = Dataset()
        for element in dataset.elements():
            if element.tag == PIXEL_DATA or element.tag.element == 0:
                continue  # group lengths are recomputed (PS3.5 7.2), not attributes to restore
            originals[element.tag] = copy.deepcopy(element) if isinstance(element, DataElement) else element
        return originals

    def protect(self, dataset: Dataset, originals: Dataset) -> Protected:
        """Add the Encrypted Attributes Sequence to `dataset` (after the tag stage)."""
        item = Dataset()
        encodings = convert_encodings(originals.get("SpecificCharacterSet"))
        current_encodings = convert_encodings(dataset.get("SpecificCharacterSet"))
        for tag in list(originals.keys()):
            original = originals.get_item(tag)
            current = dataset.get_item(tag) if tag in dataset else None
            if current is original and tag != SOP_INSTANCE_UID:
                continue  # never converted, never changed
            if (
                tag == SOP_INSTANCE_UID
                or current is None
                or _encoded(originals, tag, encodings) != _encoded(dataset, tag, current_encodings)
            ):
                item[tag] = _portable(originals, tag)
        if ENCRYPTED_ATTRIBUTES_SEQUENCE in dataset:
            del dataset[ENCRYPTED_ATTRIBUTES_SEQUENCE]  # an upstream one was kept whole in `item`
        content = _encode_content(item, encodings)
        encrypted = cms.encrypt(content, self.recipients)
        carrier = Dataset()
        carrier.add_new(ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID, "UI", ExplicitVRLittleEndian)
        carrier.add_new(ENCRYPTED_CONTENT, "OB", encrypted)
        dataset.add_new(ENCRYPTED_ATTRIBUTES_SEQUENCE, "SQ", DicomSequence([carrier]))
        return Protected(encrypted, len(item))


def _encoded(dataset: Dataset, tag: BaseTag, encodings: list[str]) -> bytes:
    """One element as Explicit VR Little Endian bytes (raw values written as they came)."""
    element = dataset.get_item(tag)
    if isinstance(element, RawDataElement) and _raw_is_portable(element):
        return _raw_bytes(element)  # the common case for originals: no conversion, no writer
    return _explicit_little_endian(_resolved(dataset, tag), encodings)


def _explicit_little_endian(element: DataElement, encodings: list[str]) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()


def _raw_bytes(element: RawDataElement) -> bytes:
    """What write_data_element writes for a raw element (PS3.5 7.1.2), built directly."""
    vr = str(element.VR)
    value = bytes(element.value or b"")
    length = 0xFFFFFFFF if element.length == 0xFFFFFFFF else len(value)
    head = struct.pack("<HH", element.tag >> 16, element.tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, length) + value
    return head + struct.pack("<H", length) + value


# VRs with a 4-byte length in explicit VR (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


def _raw_is_portable(element: RawDataElement) -> bool:
    """A raw value that can be written into Explicit VR Little Endian as it is."""
    return element.VR is not None and element.VR != "SQ" and bool(element.is_little_endian)


def _portable(dataset: Dataset, tag: BaseTag) -> DataElement | RawDataElement:
    element = dataset.get_item(tag)
    if isinstance(element, RawDataElement) and _raw_is_portable(element):
        return element
    converted = _resolved(dataset, tag)
    if converted.VR == "SQ":
        for item in converted.value or ():
            _materialize(item)
    return converted


def _resolved(dataset: Dataset, tag: BaseTag) -> DataElement:
    """The converted element with an ambiguous VR ("US or SS", "OB or OW") resolved from the
    data set, as the writer does for the whole object (PS3.5 Annex A.1)."""
    element: DataElement = dataset[int(tag)]
    if " or " in str(element.VR):
        correct_ambiguous_vr_element(element, dataset, True)
    return element


def _encode_content(item: Dataset, encodings: list[str]) -> bytes:
    """The Encrypted Attributes Data Set: the Modified Attributes Sequence (one item), PS3.3
    C.12.1.1.4.1, in Explicit VR Little Endian."""
    return _explicit_little_endian(DataElement(MODIFIED_ATTRIBUTES_SEQUENCE, "SQ", DicomSequence([item])), encodings)


def _materialize(dataset: Dataset) -> None:
    """Convert nested sequences and VR-less raw elements, so the data set can be written in any
    transfer syntax (raw values are written verbatim, in their source encoding)."""
    for element in list(dataset.elements()):
        if isinstance(element, RawDataElement) and _raw_is_portable(element):
            continue
        converted = _resolved(dataset, element.tag)
        if converted.VR == "SQ":
            for item in converted.value or ():
                _materialize(item)


def without_encrypted_content(encoded: Encoded, protected: Protected | None, dataset: Dataset) -> Encoded:
    """The encoded output as verify must see it: the ciphertext replaced by zeros of the same
    length (random bytes would match short values by chance, and nothing readable is in there).

    Only what verify reads changes; the structure stays parseable (an OB of zeros). Deflated
    output is one compressed part where the ciphertext cannot be found: `dataset` is encoded
    once more, with the value zeroed, for verify alone.
    """
    if protected is None:
        return encoded
    content = protected.encrypted_content
    parts = list(encoded.parts)
    for index, part in enumerate(parts):
        if index == encoded.pixel_value:
            continue
        data = bytes(part)
        at = data.find(content)
        if at >= 0:
            parts[index] = data[:at] + bytes(len(content)) + data[at + len(content) :]
            return dataclasses.replace(encoded, parts=tuple(parts))
    element = dataset[ENCRYPTED_ATTRIBUTES_SEQUENCE].value[0][ENCRYPTED_CONTENT]
    element.value = bytes(len(content))
    try:
        return part10.encode(dataset)
    finally:
        element.value = content


# --- re-identifier ---------------------------------------------------------------------------


def decrypt_attributes(
    dataset: Dataset, private_key: cms.PrivateKey, certificate: x509.Certificate | None = None
) -> Dataset:
    """The item of the Modified Attributes Sequence encrypted for `private_key`.

    Raises ReidentifyError when there is no Encrypted Attributes Sequence, or no item of it
    is encrypted for this key.
    """
    if ENCRYPTED_ATTRIBUTES_SEQUENCE not in dataset:
        raise ReidentifyError("no Encrypted Attributes Sequence (0400,0500)")
    unreadable = False
    for carrier in dataset[ENCRYPTED_ATTRIBUTES_SEQUENCE].value or ():
        syntax = str(carrier.get(ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID, DataElement(0, "UI", "")).value or "")
        if syntax.strip("\x00 ") != ExplicitVRLittleEndian or ENCRYPTED_CONTENT not in carrier:
            unreadable = True
            continue
        try:
            content = cms.decrypt(bytes(carrier[ENCRYPTED_CONTENT].value), private_key, certificate, CONTENT_START)
        except cms.NotForThisKey:
            continue
        except cms.CMSError:
            unreadable = True
            continue
        decoded = read_dataset(BytesIO(content), is_implicit_VR=False, is_little_endian=True)
        items = decoded[MODIFIED_ATTRIBUTES_SEQUENCE].value if MODIFIED_ATTRIBUTES_SEQUENCE in decoded else []
        if len(items) != 1:
            raise ReidentifyError("Modified Attributes Sequence must hold exactly one item")
        return items[0]  # type: ignore[no-any-return]
    if unreadable:
        raise ReidentifyError("Encrypted Attributes not readable (unsupported syntax or structure) or not for this key")
    raise ReidentifyError("Encrypted Attributes are not encrypted for this key")


def restore(dataset: Dataset, originals: Dataset) -> None:
    """Move the original attributes into `dataset` (PS3.15 E.1.2, re-identifier steps 2-3)."""
    if ENCRYPTED_ATTRIBUTES_SEQUENCE in dataset:
        del dataset[ENCRYPTED_ATTRIBUTES_SEQUENCE]  # before: an upstream one may be restored
    _materialize(originals)
    for element in originals.elements():
        dataset[element.tag] = element
    restored = set(originals.keys())
    if PATIENT_IDENTITY_REMOVED not in restored:
        dataset.add_new(PATIENT_IDENTITY_REMOVED, "CS", "NO")
    for tag in (
        DEIDENTIFICATION_METHOD,
        DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
    ):
        if tag not in restored and tag in dataset:
            del dataset[tag]
    if SOP_INSTANCE_UID in dataset and hasattr(dataset, "file_meta"):
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
