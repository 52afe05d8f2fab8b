"""The optional neural detector: PP-OCR text detection on ONNX Runtime (extra ``[ocr]``).

Not installed yet in this build: asking for it is a configuration error.
"""

from __future__ import annotations

from dicom_proxy.config import ConfigError
from dicom_proxy.deidentify.pixels.detect import TextDetector


def load(identifying_only: bool = False) -> TextDetector:
    raise ConfigError(['deidentify.pixels.detector: "ppocr" needs the optional package (pip install dicom-proxy[ocr])'])
