"""The optional neural detector: PP-OCR text detection on ONNX Runtime (extra ``[ocr]``).

The networks are the PP-OCR detection and recognition models that the ``rapidocr`` package
ships inside its wheel (nothing is downloaded: the node may be offline); ONNX Runtime runs them
on the CPU. Only the model files are used: pre- and post-processing are here, so the behaviour
does not change with that package's defaults.

Detection (a DB network, "Real-time Scene Text Detection with Differentiable Binarization"):
the frame is scaled so each side is a multiple of 32 (small images are enlarged, so 4 px text
is seen at the size the network was trained on), the probability map is thresholded, each
region becomes a box whose score is its mean probability, and boxes are grown by the network's
shrink ratio (the map marks the core of each text line).

With ``mask_text = "identifying"`` each box is also read (CTC recognition network) and masked
only when the text looks identifying: a value of the original header (name parts, IDs, dates),
a date, or two or more digits. Anything that cannot be read is masked (fail closed).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dicom_proxy.config import ConfigError
from dicom_proxy.deidentify.pixels.detect import FoundBox, Hints, TextDetector
from dicom_proxy.deidentify.pixels.risk import normalised
from dicom_proxy.deidentify.pixels.rules import Box

_PACKAGE = "rapidocr"
_DETECTION_MODEL = "PP-OCRv6_det_small.onnx"
_RECOGNITION_MODEL = "PP-OCRv6_rec_small.onnx"
_INSTALL = 'deidentify.pixels.detector: "ppocr" needs the optional packages: pip install dicom-proxy[ocr]'

# Dates as burned in by consoles: 2024-03-01, 01.03.2024, 03/01/24, 20240301.
_DATE = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{1,4}|(?:19|20)\d{6}")
_DIGITS = re.compile(r"\d.*\d")
# Labels that identify nobody: orientation, units, sequence and view names, ruler marks.
BENIGN_LABELS = frozenset(
    (
        "L",
        "R",
        "A",
        "P",
        "H",
        "F",
        "S",
        "I",
        "LT",
        "RT",
        "AP",
        "PA",
        "LAT",
        "OBL",
        "AX",
        "AXIAL",
        "SAG",
        "COR",
        "KV",
        "MA",
        "MAS",
        "MS",
        "CM",
        "MM",
        "W",
        "C",
        "WL",
        "WW",
        "T1",
        "T2",
        "FLAIR",
        "DWI",
        "ADC",
        "PD",
        "STIR",
        "CC",
        "MLO",
        "ML",
        "LM",
        "XCCL",
        "ERECT",
        "SUPINE",
        "PRONE",
        "UPRIGHT",
        "PORTABLE",
    )
)


def load(identifying_only: bool = False) -> TextDetector:
    """The PP-OCR detector; ConfigError when the extra is not installed."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError([_INSTALL]) from None
    models = _model_dir()
    detection = models / _DETECTION_MODEL
    recognition = models / _RECOGNITION_MODEL
    if not detection.is_file() or (identifying_only and not recognition.is_file()):
        raise ConfigError([_INSTALL])
    options = onnxruntime.SessionOptions()
    # One thread per call, as for OpenCV: the node runs objects in parallel on both cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    det = onnxruntime.InferenceSession(str(detection), options, providers=providers)
    reader = None
    if identifying_only:
        rec = onnxruntime.InferenceSession(str(recognition), options, providers=providers)
        reader = _Reader(rec, _characters(rec))
    return PaddleDetector(det, reader)


def _model_dir() -> Path:
    try:
        return Path(str(resources.files(_PACKAGE))) / "models"
    except ModuleNotFoundError:
        raise ConfigError([_INSTALL]) from None


def _characters(session: Any) -> tuple[str, ...]:
    """The recognition alphabet stored in the model's metadata (PaddleOCR exports it as
    ``character``, one symbol per line); index 0 of the output is the CTC blank."""
    meta = session.get_modelmeta().custom_metadata_map
    text = meta.get("character")
    if not text:
        raise ConfigError([f"{_INSTALL} (the recognition model carries no alphabet)"])
    return ("", *text.splitlines(), " ")


@dataclass(frozen=True)
class PaddleDetector:
    """PP-OCR text detection (and optional recognition) on ONNX Runtime."""

    session: Any
    reader: _Reader | None = None
    name: str = "ppocr"
    threshold: float = 0.3
    box_score: float = 0.5
    unclip_ratio: float = 1.6
    # Frames are scaled so the shorter side is at least this (PP-OCR's training scale).
    min_side: int = 736
    max_side: int = 1280

    def detect(self, frame: np.ndarray, hints: Hints) -> tuple[FoundBox, ...]:
        rows, columns = frame.shape
        scale = min(max(self.min_side / min(rows, columns), 1.0), self.max_side / max(rows, columns))
        height = max(32, round(rows * scale / 32) * 32)
        width = max(32, round(columns * scale / 32) * 32)
        resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        tensor = (resized.astype(np.float32) / 127.5 - 1.0)[None, None]
        tensor = np.repeat(tensor, 3, axis=1)  # the network expects three channels
        probability = self.session.run(None, {self.session.get_inputs()[0].name: tensor})[0][0, 0]
        found = []
        for box, score in self._boxes(probability, rows / height, columns / width, rows, columns):
            if self.reader is not None and not self.reader.identifying(frame, box, hints):
                continue
            found.append(FoundBox(box, self.name, score))
        return tuple(found)

    def _boxes(self, probability: np.ndarray, sy: float, sx: float, rows: int, columns: int) -> list[tuple[Box, float]]:
        binary = (probability > self.threshold).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        result = []
        for i in range(1, count):
            left, top, width, height, area = (int(v) for v in stats[i])
            if min(width, height) < 2:
                continue
            score = float(
                probability[top : top + height, left : left + width][
                    labels[top : top + height, left : left + width] == i
                ].mean()
            )
            if score < self.box_score:
                continue
            # DB shrinks each text region by area * (1 - r^2) / perimeter; grow it back.
            grow = area * self.unclip_ratio / max(2 * (width + height), 1)
            box = Box(
                top=max(int((top - grow) * sy), 0),
                left=max(int((left - grow) * sx), 0),
                bottom=min(int(np.ceil((top + height + grow) * sy)) + 1, rows),
                right=min(int(np.ceil((left + width + grow) * sx)) + 1, columns),
            )
            if box.bottom > box.top and box.right > box.left:
                result.append((box, score))
        return result


@dataclass
class _Reader:
    """CTC text recognition of one box; the session is shared, so calls are serialised."""

    session: Any
    characters: tuple[str, ...]
    height: int = 48
    max_width: int = 640
    lock: threading.Lock = threading.Lock()  # noqa: RUF009 - one lock per reader, by design

    def read(self, frame: np.ndarray, box: Box) -> str:
        crop = frame[box.top : box.bottom, box.left : box.right]
        width = min(self.max_width, max(16, round(crop.shape[1] * self.height / max(crop.shape[0], 1))))
        resized = cv2.resize(crop, (width, self.height), interpolation=cv2.INTER_LINEAR)
        tensor = np.repeat((resized.astype(np.float32) / 127.5 - 1.0)[None, None], 3, axis=1)
        with self.lock:
            scores = self.session.run(None, {self.session.get_inputs()[0].name: tensor})[0][0]
        best = scores.argmax(axis=1)
        text, previous = [], -1
        for index in best:  # CTC: collapse repeats, drop blanks (index 0)
            if index != previous and 0 < index < len(self.characters):
                text.append(self.characters[index])
            previous = int(index)
        return "".join(text)

    def identifying(self, frame: np.ndarray, box: Box, hints: Hints) -> bool:
        """Whether to mask: yes for a header value, a date or two digits, and for anything
        that is not made only of benign labels (fail closed: unreadable text is masked)."""
        text = self.read(frame, box).strip()
        if not text:
            return True
        compact = normalised(text)
        if any(value in compact for value in hints.identifying if len(value) >= 3):
            return True
        if _DATE.search(text) or _DIGITS.search(text):
            return True
        tokens = [t for t in re.split(r"[^A-Za-z0-9]+", text.upper()) if t]
        return not tokens or not all(t in BENIGN_LABELS for t in tokens)
