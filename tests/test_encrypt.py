"""Encrypted Attributes (PS3.15 E.1.2, issue 11 parts 3-5): the engine stores the originals of
what it changed as CMS EnvelopedData; `reidentify` restores them for the recipient's key only;
GDCM's gdcmanon and OpenSSL read what we write, and we read what gdcmanon writes.

Certificates are throwaway ones generated here (cryptography's x509 builder).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import warnings
from io import BytesIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence

from dicom_proxy.cli import main
from dicom_proxy.config import ConfigError, EncryptionConfig, load_config
from dicom_proxy.deidentify import cms
from dicom_proxy.deidentify.encrypt import CONTENT_START, decrypt_attributes, restore
from dicom_proxy.models import Refused
from tests.certificates import self_signed
from tests.dicomfactory import PATIENT_ID, PATIENT_NAME, TEST_FILES, ct_dataset, engine
from tests.netpeers import Proxy, base_config, storescu, wait_until, write_config

warnings.filterwarnings("ignore", module="pydicom")

ENCRYPTED_ATTRIBUTES = 0x04000500
ENCRYPTED_CONTENT = 0x04000520
# Attributes the engine adds or rewrites to record what it did; not originals to compare.
RECORD = {0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x04000500, 0x00280301}


# --- throwaway recipients ---------------------------------------------------------------------


class Recipient:
    def __init__(self, folder: Path, name: str, kind: str) -> None:
        self.key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.certificate = self_signed(self.key, name)
        self.key_path = folder / f"{name}.key"
        self.certificate_path = folder / f"{name}.pem"
        self.key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        )
        self.certificate_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recipient]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "rsa": Recipient(folder, "research-office", "rsa"),
        "ec": Recipient(folder, "ec-office", "ec"),
        "other_rsa": Recipient(folder, "someone-else", "rsa"),
        "other_ec": Recipient(folder, "someone-else-ec", "ec"),
    }


def encrypting_engine(*recipients: Recipient, options: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    config = EncryptionConfig(recipients=tuple(r.certificate_path for r in recipients))
    return engine(*options, encryption=config)


# --- a rich original ----------------------------------------------------------------------------


def rich_dataset() -> Dataset:
    """CT with identifying values at the top level, in nested sequences and a private block."""
    ds = ct_dataset()
    request = Dataset()
    request.RequestedProcedureID = "RP-55120"
    request.ScheduledProcedureStepID = "SPS-88213"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X1", "99LOCAL", "chest for Holloway"
    request.ScheduledProtocolCodeSequence = Sequence([code])
    ds.RequestAttributesSequence = Sequence([request])
    other = Dataset()
    other.PatientID = "OTHER-77120"
    other.IssuerOfPatientID = "SAINT ELSEWHERE"
    ds.OtherPatientIDsSequence = Sequence([other])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.7777.1.99"
    ds.ReferencedStudySequence = Sequence([referenced])
    ds.OperatorsName = ["WATSON^JOHN", "HUDSON^MARTHA"]
    ds.PatientComments = "lives at 221B Baker Street"
    block = ds.private_block(0x0029, "ACME PRIVATE", create=True)
    block.add_new(0x10, "LO", "HOLLOWAY private note")
    return ds


def element_bytes(ds: Dataset, tag: int) -> bytes:
    """One element as Explicit VR Little Endian bytes, as the standard encodes the content."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, ds[tag], ds.get("SpecificCharacterSet"))
    return buffer.getvalue()


def deidentify_to(tmp_path: Path, eng, ds: Dataset) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    source = tmp_path / "original.dcm"
    ds.save_as(source, enforce_file_format=True)
    result = eng.deidentify_file(source)
    output = tmp_path / "deidentified.dcm"
    output.write_bytes(result.encoded)
    return source, output


def assert_restored(original: Dataset, restored: Dataset, deidentified: Dataset) -> int:
    """Every attribute the engine removed or changed is back, byte for byte; returns how many."""
    changed = 0
    for element in original:
        tag = element.tag
        if tag in RECORD or tag == 0x7FE00010 or tag.element == 0:
            continue  # the record of de-identification, pixels, group lengths (PS3.5 7.2)
        if tag in deidentified and element_bytes(deidentified, tag) == element_bytes(original, tag):
            continue
        changed += 1
        assert tag in restored, f"{tag} not restored"
        assert element_bytes(restored, tag) == element_bytes(original, tag), f"{tag} differs"
    return changed


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


# --- the engine and reidentify ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_round_trip_restores_every_modified_attribute(
    kind: str, keys: dict[str, Recipient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eng = encrypting_engine(keys[kind], options=("retain_longitudinal_modified_dates", "clean_descriptors"))
    source, output = deidentify_to(tmp_path, eng, rich_dataset())
    raw = output.read_bytes()
    for needle in (b"HOLLOWAY", b"WINIFRED", PATIENT_ID.encode(), b"RP-55120", b"OTHER-77120"):
        assert needle not in raw  # nothing in clear: only inside the ciphertext
    deidentified = dcmread(output)
    assert deidentified[ENCRYPTED_ATTRIBUTES].value[0].EncryptedContentTransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert run_cli("reidentify", "--key", keys[kind].key_path, "--output", tmp_path / "back", output) == 0
    restored_files = list((tmp_path / "back").rglob("*.dcm"))
    assert len(restored_files) == 1
    assert restored_files[0].stat().st_mode & 0o077 == 0
    restored = dcmread(restored_files[0])
    original = dcmread(source)
    assert assert_restored(original, restored, deidentified) >= 15
    assert restored.PatientName == PATIENT_NAME
    assert restored.PatientIdentityRemoved == "NO"
    assert "DeidentificationMethod" not in restored and ENCRYPTED_ATTRIBUTES not in restored
    assert restored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert str(restored_files[0].relative_to(tmp_path / "back")).startswith(deidentified.StudyInstanceUID)
    assert "HOLLOWAY" not in capsys.readouterr().out


def test_show_prints_the_originals_and_writes_nothing(
    keys: dict[str, Recipient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"]), rich_dataset())
    before = sorted(tmp_path.rglob("*"))
    assert run_cli("reidentify", "--key", keys["rsa"].key_path, "--show", output) == 0
    shown = capsys.readouterr().out
    assert "HOLLOWAY^WINIFRED" in shown and PATIENT_ID in shown and "RP-55120" in shown
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("wrong", ["other_rsa", "other_ec"])
@pytest.mark.parametrize("mode", ["--show", "--output"])
def test_a_key_the_content_is_not_for_is_refused(
    wrong: str, mode: str, keys: dict[str, Recipient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"], keys["ec"]), rich_dataset())
    target = [mode] if mode == "--show" else [mode, tmp_path / "back"]
    assert run_cli("reidentify", "--key", keys[wrong].key_path, *target, output) == 1
    captured = capsys.readouterr()
    assert "not encrypted for this key" in captured.err
    assert "HOLLOWAY" not in captured.out + captured.err
    assert not (tmp_path / "back").exists() or not list((tmp_path / "back").rglob("*.dcm"))


def test_every_recipient_can_reidentify(keys: dict[str, Recipient], tmp_path: Path) -> None:
    _, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"], keys["ec"]), rich_dataset())
    deidentified = dcmread(output)
    for recipient in (keys["rsa"], keys["ec"]):
        for certificate in (None, recipient.certificate):
            originals = decrypt_attributes(deidentified, recipient.key, certificate)
            assert originals.PatientName == PATIENT_NAME


def test_certificate_picks_the_recipient_exactly(keys: dict[str, Recipient], tmp_path: Path) -> None:
    _, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"]), rich_dataset())
    deidentified = dcmread(output)
    with pytest.raises(ValueError, match="not encrypted for this key"):
        decrypt_attributes(deidentified, keys["rsa"].key, keys["other_rsa"].certificate)


def test_no_encrypted_attributes_is_refused(keys: dict[str, Recipient], tmp_path: Path) -> None:
    _, output = deidentify_to(tmp_path, engine(), rich_dataset())
    assert run_cli("reidentify", "--key", keys["rsa"].key_path, "--show", output) == 1


def test_without_recipients_nothing_is_added(tmp_path: Path) -> None:
    _, output = deidentify_to(tmp_path, engine(), rich_dataset())
    assert ENCRYPTED_ATTRIBUTES not in dcmread(output)


def test_each_object_gets_its_own_content_key(keys: dict[str, Recipient], tmp_path: Path) -> None:
    eng = encrypting_engine(keys["rsa"])
    first = dcmread(deidentify_to(tmp_path, eng, rich_dataset())[1])
    second = dcmread(deidentify_to(tmp_path, eng, rich_dataset())[1])
    content = [d[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value for d in (first, second)]
    assert content[0] != content[1]


# --- encryption on: the de-identification of every example still holds --------------------


EXAMPLES = sorted(path.name for path in TEST_FILES.glob("*.dcm"))


@pytest.fixture(scope="module")
def example_engines(keys: dict[str, Recipient]):  # type: ignore[no-untyped-def]
    options = ("retain_longitudinal_modified_dates", "clean_descriptors", "clean_structured_content")
    return engine(*options), encrypting_engine(keys["rsa"], options=options)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_with_encryption(name: str, example_engines, keys: dict[str, Recipient]) -> None:  # type: ignore[no-untyped-def]
    """Same outcome as without encryption (verify included); the header outside the encrypted
    content is the same; and the originals come back exactly."""
    plain, encrypting = example_engines
    source = TEST_FILES / name
    try:
        expected = dcmread(BytesIO(plain.deidentify_file(source).encoded))
    except Refused:
        with pytest.raises(Refused):
            encrypting.deidentify_file(source)
        return
    out = dcmread(BytesIO(encrypting.deidentify_file(source).encoded))
    assert set(out.keys()) - {ENCRYPTED_ATTRIBUTES} == set(expected.keys())
    originals = decrypt_attributes(out, keys["rsa"].key)
    original = dcmread(source, force=True)
    restore(out, originals)
    assert_restored(original, out, expected)


# --- interoperability: OpenSSL, cryptography, GDCM -------------------------------------------


def _encrypted_content(path: Path) -> bytes:
    return bytes(dcmread(path)[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_openssl_cms_decrypts_our_content(kind: str, keys: dict[str, Recipient], tmp_path: Path) -> None:
    _, output = deidentify_to(tmp_path, encrypting_engine(keys[kind]), rich_dataset())
    (tmp_path / "content.der").write_bytes(_encrypted_content(output))
    result = subprocess.run(
        ["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", tmp_path / "content.der"]
        + ["-inkey", keys[kind].key_path, "-recip", keys[kind].certificate_path],
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(CONTENT_START)
    decoded = read_dataset(BytesIO(result.stdout), is_implicit_VR=False, is_little_endian=True)
    assert decoded.ModifiedAttributesSequence[0].PatientName == PATIENT_NAME


def test_cryptography_pkcs7_decrypts_our_rsa_content(keys: dict[str, Recipient], tmp_path: Path) -> None:
    _, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"]), rich_dataset())
    plain = pkcs7.pkcs7_decrypt_der(_encrypted_content(output), keys["rsa"].certificate, keys["rsa"].key, [])
    assert plain.startswith(CONTENT_START)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_we_decrypt_openssl_cms(kind: str, keys: dict[str, Recipient], tmp_path: Path) -> None:
    message = CONTENT_START + b"\x00" * 10
    for extra in ([], ["-stream", "-outform", "PEM"]):
        result = subprocess.run(
            [
                "openssl",
                "cms",
                "-encrypt",
                "-binary",
                "-aes256",
                "-outform",
                "DER",
                *extra,
                keys[kind].certificate_path,
            ],
            input=message,
            capture_output=True,
        )
        assert result.returncode == 0, result.stderr.decode()
        data = result.stdout
        if extra:
            data = base64.b64decode(b"".join(data.splitlines()[1:-1]))
        assert cms.decrypt(data, keys[kind].key) == message
        with pytest.raises(cms.NotForThisKey):
            cms.decrypt(data, keys[f"other_{kind}"].key, expect=CONTENT_START)


def _gdcmanon(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    assert shutil.which("gdcmanon"), "gdcmanon (Debian libgdcm-tools) is required"
    return subprocess.run(["gdcmanon", *map(str, args)], capture_output=True, timeout=120)


def test_gdcmanon_restores_originals_from_our_output(keys: dict[str, Recipient], tmp_path: Path) -> None:
    source, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"]), rich_dataset())
    restored_path = tmp_path / "gdcm-restored.dcm"
    result = _gdcmanon("-d", "-k", keys["rsa"].key_path, "-i", output, "-o", restored_path)
    assert result.returncode == 0, result.stderr.decode()
    restored = dcmread(restored_path)
    assert assert_restored(dcmread(source), restored, dcmread(output)) >= 15
    assert ENCRYPTED_ATTRIBUTES not in restored


def test_we_restore_originals_from_gdcmanon_output(
    keys: dict[str, Recipient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "original.dcm"
    rich_dataset().save_as(source, enforce_file_format=True)
    protected = tmp_path / "gdcm.dcm"
    result = _gdcmanon("-e", "-c", keys["rsa"].certificate_path, "-i", source, "-o", protected)
    assert result.returncode == 0, result.stderr.decode()
    anonymised = dcmread(protected)
    assert anonymised.PatientName != PATIENT_NAME
    assert run_cli("reidentify", "--key", keys["rsa"].key_path, "--output", tmp_path / "back", protected) == 0
    restored = dcmread(next((tmp_path / "back").rglob("*.dcm")))
    assert assert_restored(dcmread(source), restored, anonymised) >= 10
    assert restored.PatientName == PATIENT_NAME
    assert run_cli("reidentify", "--key", keys["other_rsa"].key_path, "--show", protected) == 1
    assert "not encrypted for this key" in capsys.readouterr().err


# --- configuration ---------------------------------------------------------------------------


def _config(tmp_path: Path, recipients: str, extra: str = "") -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
[node]
ae_title = "DEID"
[[destinations]]
name = "archive"
type = "folder"
path = "{tmp_path / "out"}"
[deidentify.encryption]
recipients = {recipients}
{extra}
""",
        encoding="utf-8",
    )
    return path


def test_config_reads_the_recipients(keys: dict[str, Recipient], tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, f'["{keys["rsa"].certificate_path}", "{keys["ec"].certificate_path}"]'))
    assert config.deidentify.encryption.certificates == (keys["rsa"].certificate, keys["ec"].certificate)


@pytest.mark.parametrize(
    ("recipients", "extra", "message"),
    [
        ('["missing.pem"]', "", "deidentify.encryption.recipients[0]: file not found"),
        ('["KEY"]', "", "deidentify.encryption.recipients[0]: not an X.509 certificate"),
        ('"certs/x.pem"', "", "deidentify.encryption.recipients: must be a list of strings"),
        ("[]", "cipher = 'des'", "deidentify.encryption.cipher"),
    ],
)
def test_config_errors_name_the_key(
    recipients: str, extra: str, message: str, keys: dict[str, Recipient], tmp_path: Path
) -> None:
    recipients = recipients.replace("KEY", str(keys["rsa"].key_path))
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, recipients, extra))
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_expired_certificate_is_a_config_error(tmp_path: Path) -> None:
    old = self_signed(ec.generate_private_key(ec.SECP256R1()), "old", valid_from_days=-10, valid_days=9)
    path = tmp_path / "old.pem"
    path.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, f'["{path}"]'))
    assert "not valid now" in caught.value.problems[0]


# --- over a real association -------------------------------------------------------------------


@pytest.mark.network
def test_served_objects_carry_encrypted_attributes_the_recipient_restores(
    keys: dict[str, Recipient], tmp_path: Path
) -> None:
    """storescu -> proxy (serve, encryption configured) -> folder archive -> reidentify."""
    source = tmp_path / "in" / "original.dcm"
    source.parent.mkdir()
    rich_dataset().save_as(source, enforce_file_format=True)
    archive = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
    sections = base_config(tmp_path, [archive])
    sections["deidentify"]["encryption"] = {"recipients": [str(keys["ec"].certificate_path)]}
    with Proxy(write_config(tmp_path / "proxy.toml", sections), tmp_path) as proxy:
        assert storescu(proxy.port, [source]).statuses == ["Success"]
        assert wait_until(lambda: len(list((tmp_path / "out").rglob("*.dcm"))) == 1, 30)
    delivered = next((tmp_path / "out").rglob("*.dcm"))
    assert b"HOLLOWAY" not in delivered.read_bytes()
    assert run_cli("reidentify", "--key", keys["ec"].key_path, "--output", tmp_path / "back", delivered) == 0
    restored = dcmread(next((tmp_path / "back").rglob("*.dcm")))
    assert assert_restored(dcmread(source), restored, dcmread(delivered)) >= 15


def test_verify_sees_the_ciphertext_as_zeros_only(keys: dict[str, Recipient], tmp_path: Path) -> None:
    """What verify reads: the same object with Encrypted Content zeroed; the output keeps it."""
    from dicom_proxy.deidentify.encrypt import Protected, without_encrypted_content
    from dicom_proxy.part10 import Encoded

    _, output = deidentify_to(tmp_path, encrypting_engine(keys["rsa"]), rich_dataset())
    content = _encrypted_content(output)
    encoded = Encoded((output.read_bytes(),))
    masked = without_encrypted_content(encoded, Protected(content, 1), dcmread(output))
    seen = dcmread(BytesIO(masked.searchable()))
    assert bytes(seen[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value) == bytes(len(content))
    assert len(masked.searchable()) == len(encoded.searchable())
    assert without_encrypted_content(encoded, None, dcmread(output)) is encoded


def test_verify_sees_zeros_in_deflated_output_too(keys: dict[str, Recipient]) -> None:
    """Deflated Explicit VR Little Endian: the ciphertext is compressed with everything else,
    so verify gets the object encoded once more with the value zeroed."""
    from dicom_proxy import part10
    from dicom_proxy.deidentify.encrypt import Protected, without_encrypted_content

    dataset = part10.read_file(TEST_FILES / "image_dfl.dcm")
    eng = encrypting_engine(keys["rsa"])
    result = eng.deidentify(dataset)
    assert result.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
    out = dcmread(BytesIO(result.encoded))
    content = bytes(out[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value)
    masked = without_encrypted_content(part10.encode(out), Protected(content, 1), out)
    seen = dcmread(BytesIO(masked.searchable()))
    assert bytes(seen[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value) == bytes(len(content))
    assert bytes(out[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value) == content  # restored
