"""CMS EnvelopedData (RFC 5652 section 6) for the Encrypted Attributes Sequence (PS3.15 E.1.2).

Written here, on `cryptography` primitives only, because `cryptography`'s pkcs7 module builds
EnvelopedData for RSA recipients only and cannot decrypt without the recipient's certificate:

- content encryption: AES-256-CBC (RFC 3565), a fresh random key per object, never stored;
  AES-128/192-CBC are accepted when decrypting (gdcmanon --aes128/--aes192);
- RSA recipients: key transport, RSAES-PKCS1-v1_5 (RFC 3370 4.2.1; the algorithm PS3.15 E.1.2
  names and gdcmanon and OpenSSL use), recipient named by issuer and serial number;
- EC recipients (P-256/384/521): ephemeral-static ECDH key agreement (RFC 5753 3.1,
  dhSinglePass-stdDH-sha256kdf-scheme, X9.63 KDF with SHA-256, AES-256 key wrap RFC 3394).

The encoder writes DER; the decoder reads BER too (indefinite lengths, constructed OCTET
STRINGs), as OpenSSL may stream. Decryption finds the recipient by the certificate when one is
given, otherwise by trying the key on every recipient of its type; content that does not
decrypt with the key is refused with NotForThisKey.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

ENVELOPED_DATA = "1.2.840.113549.1.7.3"
DATA = "1.2.840.113549.1.7.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
ECDH_SHA256_KDF = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme (RFC 5753 7.1.4)
# Every stdDH scheme of RFC 5753 7.1.4 is read (OpenSSL's default is the SHA-1 KDF one).
ECDH_KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.133.16.840.63.0.2": hashes.SHA1,
    "1.3.132.1.11.0": hashes.SHA224,
    ECDH_SHA256_KDF: hashes.SHA256,
    "1.3.132.1.11.2": hashes.SHA384,
    "1.3.132.1.11.3": hashes.SHA512,
}
AES_CBC = {"2.16.840.1.101.3.4.1.2": 16, "2.16.840.1.101.3.4.1.22": 24, "2.16.840.1.101.3.4.1.42": 32}
AES256_CBC = "2.16.840.1.101.3.4.1.42"
AES_WRAP = {"2.16.840.1.101.3.4.1.5": 16, "2.16.840.1.101.3.4.1.25": 24, "2.16.840.1.101.3.4.1.45": 32}
AES256_WRAP = "2.16.840.1.101.3.4.1.45"
CURVES: dict[str, type[ec.EllipticCurve]] = {
    "1.2.840.10045.3.1.7": ec.SECP256R1,
    "1.3.132.0.34": ec.SECP384R1,
    "1.3.132.0.35": ec.SECP521R1,
}


class CMSError(ValueError):
    """The content is not EnvelopedData this module can read."""


class NotForThisKey(CMSError):
    """No recipient of the EnvelopedData can be decrypted with the given key."""


# --- DER encoding ------------------------------------------------------------------------


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    return tlv(0x31, b"".join(sorted(parts)))  # DER: SET OF in ascending encoding order


def integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def algorithm(dotted: str, parameters: bytes | None = None) -> bytes:
    return sequence(oid(dotted), parameters or b"")


# --- BER decoding ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One BER element: its identifier octet, and content (primitive) or children."""

    tag: int
    content: bytes
    children: tuple[Node, ...] = ()

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def der(self) -> bytes:
        """Re-encoded as DER-length TLV (used for names compared and hashed)."""
        if self.constructed:
            return tlv(self.tag, b"".join(child.der() for child in self.children))
        return tlv(self.tag, self.content)

    def octet_string(self) -> bytes:
        """Value of a (possibly constructed, BER) OCTET STRING or implicitly tagged one."""
        if self.constructed:
            return b"".join(child.octet_string() for child in self.children)
        return self.content

    def oid(self) -> str:
        if self.tag != 0x06 or not self.content:
            raise CMSError("object identifier expected")
        first = self.content[0]
        arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
        value = 0
        for byte in self.content[1:]:
            value = value << 7 | (byte & 0x7F)
            if not byte & 0x80:
                arcs.append(value)
                value = 0
        return ".".join(map(str, arcs))

    def integer(self) -> int:
        if self.tag != 0x02:
            raise CMSError("integer expected")
        return int.from_bytes(self.content, "big", signed=True)


def parse(data: bytes) -> Node:
    node, end = _parse(memoryview(data), 0, 0)
    if end != len(data) and any(data[end:]):
        raise CMSError("trailing bytes after the CMS structure")
    return node


def _parse(data: memoryview, pos: int, depth: int) -> tuple[Node, int]:
    if depth > 32 or pos + 2 > len(data):
        raise CMSError("BER structure truncated or too deep")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise CMSError("multi-byte BER tags are not used by CMS")
    first = data[pos + 1]
    pos += 2
    if first == 0x80:  # indefinite length: children up to an end-of-contents
        if not tag & 0x20:
            raise CMSError("indefinite length on a primitive element")
        children: list[Node] = []
        while True:
            if pos + 2 > len(data):
                raise CMSError("BER end-of-contents missing")
            if data[pos] == 0 and data[pos + 1] == 0:
                return Node(tag, b"", tuple(children)), pos + 2
            child, pos = _parse(data, pos, depth + 1)
            children.append(child)
    if first & 0x80:
        count = first & 0x7F
        if count > 4 or pos + count > len(data):
            raise CMSError("BER length invalid")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    end = pos + length
    if end > len(data):
        raise CMSError("BER length beyond the data")
    if not tag & 0x20:
        return Node(tag, bytes(data[pos:end])), end
    children = []
    while pos < end:
        child, pos = _parse(data, pos, depth + 1)
        children.append(child)
    if pos != end:
        raise CMSError("BER child runs past its parent")
    return Node(tag, b"", tuple(children)), end


# --- EnvelopedData -----------------------------------------------------------------------


def encrypt(content: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """EnvelopedData (DER ContentInfo) of `content` for every recipient certificate."""
    if not recipients:
        raise ValueError("at least one recipient is needed")
    key = os.urandom(32)
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    infos = [_recipient_info(certificate, key) for certificate in recipients]
    version = 0 if all(info[0] == 0x30 for info in infos) else 2  # RFC 5652 6.1
    enveloped = sequence(
        integer(version),
        set_of(*infos),
        sequence(oid(DATA), algorithm(AES256_CBC, octets(iv)), tlv(0x80, ciphertext)),
    )
    return sequence(oid(ENVELOPED_DATA), tlv(0xA0, enveloped))


def _issuer_and_serial(certificate: x509.Certificate) -> bytes:
    return sequence(certificate.issuer.public_bytes(), integer(certificate.serial_number))


def _recipient_info(certificate: x509.Certificate, key: bytes) -> bytes:
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return sequence(  # KeyTransRecipientInfo, version 0 (RFC 5652 6.2.1)
            integer(0),
            _issuer_and_serial(certificate),
            algorithm(RSA_ENCRYPTION, b"\x05\x00"),
            octets(public.encrypt(key, PKCS1v15())),
        )
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _key_agree_info(certificate, public, key)
    raise ValueError("recipient certificate key must be RSA or EC")


def _curve_oid(curve: ec.EllipticCurve) -> str:
    for dotted, kind in CURVES.items():
        if isinstance(curve, kind):
            return dotted
    raise ValueError("recipient EC curve must be P-256, P-384 or P-521")


def _key_agree_info(certificate: x509.Certificate, public: ec.EllipticCurvePublicKey, key: bytes) -> bytes:
    """KeyAgreeRecipientInfo, version 3 (RFC 5652 6.2.2; RFC 5753 3.1.1)."""
    curve = _curve_oid(public.curve)
    ephemeral = ec.generate_private_key(public.curve)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kek = _kek(ephemeral.exchange(ec.ECDH(), public), AES256_WRAP)
    originator = tlv(0xA0, tlv(0xA1, algorithm(EC_PUBLIC_KEY, oid(curve)) + tlv(0x03, b"\x00" + point)))
    return tlv(
        0xA1,
        integer(3)
        + originator
        + algorithm(ECDH_SHA256_KDF, algorithm(AES256_WRAP))
        + sequence(sequence(_issuer_and_serial(certificate), octets(aes_key_wrap(kek, key)))),
    )


def _kek(shared: bytes, wrap: str, ukm: bytes | None = None, kdf: str = ECDH_SHA256_KDF) -> bytes:
    """X9.63 KDF over ECC-CMS-SharedInfo (RFC 5753 7.2): wrap algorithm, optional user keying
    material, key length in bits."""
    size = AES_WRAP[wrap]
    entity = tlv(0xA0, octets(ukm)) if ukm is not None else b""
    info = sequence(algorithm(wrap), entity, tlv(0xA2, octets((size * 8).to_bytes(4, "big"))))
    return X963KDF(algorithm=ECDH_KDF_HASHES[kdf](), length=size, sharedinfo=info).derive(shared)


@dataclass(frozen=True)
class _Envelope:
    recipients: tuple[Node, ...]
    cipher: str
    iv: bytes
    ciphertext: bytes


def _envelope(data: bytes) -> _Envelope:
    info = parse(data)
    if info.tag != 0x30 or len(info.children) != 2 or info.children[0].oid() != ENVELOPED_DATA:
        raise CMSError("not a CMS EnvelopedData")
    wrapper = info.children[1]
    if wrapper.tag != 0xA0 or len(wrapper.children) != 1:
        raise CMSError("EnvelopedData content missing")
    fields = [f for f in wrapper.children[0].children if f.tag not in (0xA0, 0xA1)]  # originatorInfo, attrs
    if len(fields) != 3 or fields[1].tag != 0x31 or fields[2].tag != 0x30:
        raise CMSError("EnvelopedData fields invalid")
    content = fields[2].children
    if len(content) != 3 or content[1].tag != 0x30 or content[2].tag not in (0x80, 0xA0):
        raise CMSError("encrypted content missing (detached content is not supported)")
    cipher = content[1].children[0].oid()
    if cipher not in AES_CBC or len(content[1].children) != 2:
        raise CMSError("content encryption is not AES-CBC")
    iv = content[1].children[1].octet_string()
    return _Envelope(fields[1].children, cipher, iv, content[2].octet_string())


def decrypt(
    data: bytes, private_key: PrivateKey, certificate: x509.Certificate | None = None, expect: bytes = b""
) -> bytes:
    """The content of EnvelopedData `data`, decrypted with `private_key`.

    `certificate` (optional) picks the recipient exactly; without it every recipient of the
    key's type is tried. `expect`: the content must start with these bytes (an integrity check
    for RSA PKCS#1 v1.5, whose decryption returns random bytes for a wrong key). Raises
    NotForThisKey when no recipient decrypts, CMSError when the structure is not readable.
    """
    envelope = _envelope(data)
    wanted = _issuer_and_serial(certificate) if certificate is not None else None
    for key in _candidate_keys(envelope, private_key, wanted):
        if len(key) != AES_CBC[envelope.cipher] or len(envelope.iv) != 16:
            continue
        content = _open(envelope, key)
        if content is not None and content.startswith(expect):
            return content
    raise NotForThisKey("the content is not encrypted for this key")


def _open(envelope: _Envelope, key: bytes) -> bytes | None:
    if not envelope.ciphertext or len(envelope.ciphertext) % 16:
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CBC(envelope.iv)).decryptor()
    padded = decryptor.update(envelope.ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None


def _candidate_keys(envelope: _Envelope, private_key: PrivateKey, wanted: bytes | None) -> Iterator[bytes]:
    for info in envelope.recipients:
        if info.tag == 0x30 and isinstance(private_key, rsa.RSAPrivateKey):
            yield from _key_transport(info, private_key, wanted)
        elif info.tag == 0xA1 and isinstance(private_key, ec.EllipticCurvePrivateKey):
            yield from _key_agreement(info, private_key, wanted)


def _key_transport(info: Node, private_key: rsa.RSAPrivateKey, wanted: bytes | None) -> Iterator[bytes]:
    fields = info.children
    if len(fields) != 4 or fields[2].children[0].oid() != RSA_ENCRYPTION:
        return
    if wanted is not None and fields[1].der() != wanted:
        return
    try:
        yield private_key.decrypt(fields[3].octet_string(), PKCS1v15())
    except ValueError:
        return


def _key_agreement(info: Node, private_key: ec.EllipticCurvePrivateKey, wanted: bytes | None) -> Iterator[bytes]:
    fields = info.children
    if len(fields) < 4 or fields[0].integer() != 3:
        return
    originator = fields[1].children[0] if fields[1].tag == 0xA0 and fields[1].children else None
    ukm = fields[2].children[0].octet_string() if fields[2].tag == 0xA1 and fields[2].children else None
    scheme = fields[-2]
    kdf = scheme.children[0].oid()
    if originator is None or originator.tag != 0xA1 or kdf not in ECDH_KDF_HASHES:
        return  # only an ephemeral originator key (RFC 5753 3.1.1) and the stdDH schemes
    wrap = scheme.children[1].children[0].oid()
    if wrap not in AES_WRAP:
        return
    point = originator.children[1].content[1:]
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(private_key.curve, point)
        kek = _kek(private_key.exchange(ec.ECDH(), ephemeral), wrap, ukm, kdf)
    except ValueError:
        return
    for recipient in fields[-1].children:
        if wanted is not None and recipient.children[0].der() != wanted:
            continue
        try:
            yield aes_key_unwrap(kek, recipient.children[1].octet_string())
        except (InvalidUnwrap, InvalidTag, ValueError):
            continue
