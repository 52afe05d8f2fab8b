"""The engine alone, in this process: milliseconds per object, median, one core."""

from __future__ import annotations

import io
import os
import statistics
import struct
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.corpus import make_corpus
from benchmarks.network import _DETECTION_OFF, deep_merge, unsupported


@dataclass(frozen=True)
class EngineResult:
    label: str
    median_ms: float | None  # None: skipped
    p90_ms: float | None = None
    objects: int = 0
    note: str = ""


def _engine_config(work: Path, detect: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "destinations": [{"name": "x", "type": "folder", "path": str(work / "unused")}],
        "deidentify": {
            "secret_key_file": str(work / "unused.key"),
            "options": ["retain_longitudinal_modified_dates", "clean_descriptors"],
        },
    }
    pixels = {"deidentify": {"pixels": {"detect": "all"}}} if detect else _DETECTION_OFF
    with_pixels = deep_merge(config, pixels)
    if detect or unsupported(with_pixels) is None:
        return with_pixels
    return config


def _received(path: Path) -> Any:
    from pydicom import dcmread

    from dicom_proxy.models import ReceivedObject

    data = path.read_bytes()
    meta = dcmread(io.BytesIO(data), stop_before_pixels=True)
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return ReceivedObject(
        data[132 + 12 + group_length :], str(meta.file_meta.TransferSyntaxUID), str(meta.SOPClassUID), "BENCH"
    )


def _as_the_node_reads() -> None:
    """pydicom configured as in the node (service.quiet_pydicom: no value validation)."""
    from dicom_proxy.service import quiet_pydicom

    quiet_pydicom()


def engine_in_process(
    work_root: Path, corpus_root: Path, size: int, detect: bool, repeat_to: int = 200
) -> EngineResult:
    """`Engine.deidentify_received` (decode, plan, pixels, tags, verify, encode) per CT object."""
    from dicom_proxy.config import parse_config
    from dicom_proxy.deidentify import Engine

    label = f"engine in process, CT {size}x{size} 16-bit, detection {'on' if detect else 'off'}"
    raw = _engine_config(work_root, detect)
    problem = unsupported(raw)
    if problem:
        return EngineResult(label, None, note=f"skipped: not in this build ({problem})")
    warnings.simplefilter("ignore")
    _as_the_node_reads()
    engine = Engine(parse_config(raw).deidentify, os.urandom(32))
    # Every timed object is a different one, as on the wire: what the engine remembers between
    # objects (a study's UIDs and pseudonyms, a series' descriptions) helps only as it would there.
    objects = [_received(p) for p in make_corpus(corpus_root, repeat_to + 3, size)]
    for obj in objects[:3]:
        engine.deidentify_received(obj)  # warm-up (policy caches, imports)
    times = []
    for obj in objects[3:]:
        started = time.perf_counter()
        engine.deidentify_received(obj)
        times.append(time.perf_counter() - started)
    times.sort()
    return EngineResult(label, statistics.median(times) * 1e3, times[int(len(times) * 0.9)] * 1e3, len(times))


def pydicom_test_files(work_root: Path) -> list[str]:
    """Every pydicom test file through `Engine.deidentify(dataset)`: none may crash."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_files

    from dicom_proxy.config import parse_config
    from dicom_proxy.deidentify import Engine
    from dicom_proxy.models import Refused

    warnings.simplefilter("ignore")
    engine = Engine(parse_config(_engine_config(work_root, False)).deidentify, os.urandom(32))
    ok, refused, failed, elapsed, times = 0, 0, 0, 0.0, []
    for path in get_testdata_files():
        try:
            ds = dcmread(path)
            if "SOPClassUID" not in ds:
                continue
        except Exception:
            continue
        t = time.perf_counter()
        try:
            engine.deidentify(ds)
            ok += 1
            times.append((time.perf_counter() - t, Path(path).name))
        except Refused:
            refused += 1
        except Exception:
            failed += 1
        elapsed += time.perf_counter() - t
    lines = [
        (
            f"engine  pydicom test files (deidentify(dataset), {ok} de-identified, {refused} refused, "
            f"{failed} crashed): {(ok + refused) / elapsed:8.1f} objects/s, "
            f"median {statistics.median(t for t, _ in times) * 1e3:.2f} ms"
        )
    ]
    lines += [f"        slowest: {name:<40} {t * 1e3:8.1f} ms" for t, name in sorted(times, reverse=True)[:5]]
    return lines
