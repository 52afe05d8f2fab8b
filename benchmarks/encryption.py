"""Encrypted Attributes (PS3.15 E.1.2) cost: engine objects/s with and without a recipient."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import make_corpus
from benchmarks.engine import _engine_config, _received


@dataclass(frozen=True)
class EncryptionResult:
    label: str
    plain_per_s: float
    encrypted_per_s: float
    objects: int


def _throwaway_certificate(folder: Path) -> Path:
    """A self-signed RSA-2048 recipient certificate, valid for a day (the key is discarded)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.certificates import self_signed

    certificate = self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048), "bench recipient")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench-recipient.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def encryption_in_process(work_root: Path, corpus_root: Path, size: int, rounds: int = 4) -> EncryptionResult:
    """The same CT objects through two engines, alternating rounds: objects/s of each."""
    from dicom_proxy.config import load_deidentify_files, parse_config
    from dicom_proxy.deidentify import Engine

    warnings.simplefilter("ignore")
    plain_raw = _engine_config(work_root, False)
    encrypted_raw = {
        **plain_raw,
        "deidentify": {
            **plain_raw["deidentify"],
            "encryption": {"recipients": [str(_throwaway_certificate(work_root / "certs"))]},
        },
    }
    key = os.urandom(32)
    engines = []
    for raw in (plain_raw, encrypted_raw):
        problems: list[str] = []
        engines.append(Engine(load_deidentify_files(parse_config(raw).deidentify, "deidentify", problems), key))
        assert not problems, problems
    objects = [_received(p) for p in make_corpus(corpus_root, 50, size)]
    for engine in engines:
        for obj in objects[:3]:
            engine.deidentify_received(obj)  # warm-up
    elapsed = [0.0, 0.0]
    for _ in range(rounds):
        for index, engine in enumerate(engines):
            started = time.perf_counter()
            for obj in objects:
                engine.deidentify_received(obj)
            elapsed[index] += time.perf_counter() - started
    count = rounds * len(objects)
    return EncryptionResult(
        f"engine in process, CT {size}x{size}, encrypted attributes (1 RSA-2048 recipient)",
        count / elapsed[0],
        count / elapsed[1],
        count,
    )
