"""Any stored representation -> 8-bit grey frames for detectors (PS3.3 C.7.6.3.1.2).

Burned-in text is drawn at the extremes of the stored range or in strong local contrast, so a
percentile window (robust to a few outliers) keeps it visible whatever Bits Stored is:
values at or above the upper percentile become 255, at or below the lower become 0. MONOCHROME1
shows low values bright, so it is inverted: detectors can then assume "larger is brighter".
Colour has already been reduced to luminance by the codec (``DecodedPixels.grey``).
"""

from __future__ import annotations

import numpy as np

# Percentiles of the window: text covers far less than 0.5% of a typical image's extremes
# only when it is small; clipping there still leaves text saturated, which is what we want.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# Percentiles are estimated on every STEP-th row and column (about 16k values for 512x512).
_STEP = 4


def to_8bit(frame: np.ndarray, monochrome1: bool = False) -> np.ndarray:
    """A (rows, columns) array of any integer or float type -> uint8, brighter is larger."""
    if frame.dtype == np.uint8 and not monochrome1:
        return np.ascontiguousarray(frame)
    sample = frame[::_STEP, ::_STEP]
    low, high = np.percentile(sample, (LOW_PERCENTILE, HIGH_PERCENTILE))
    if high <= low:  # flat sample: stretch the full range of this frame instead
        low, high = float(frame.min()), float(frame.max())
    if high <= low:
        out = np.zeros(frame.shape, dtype=np.uint8)
    else:
        scale = 255.0 / (float(high) - float(low))
        scaled = (frame.astype(np.float32) - np.float32(low)) * np.float32(scale)
        out = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    if monochrome1:
        np.subtract(255, out, out=out)
    return out
