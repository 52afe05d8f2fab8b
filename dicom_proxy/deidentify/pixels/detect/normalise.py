"""Any stored representation -> 8-bit grey frames for detectors (PS3.3 C.7.6.3.1.2).

Burned-in text is drawn at the extremes of the stored range or in strong local contrast. Two
things are kept in the 8 bits:

- Contrast: a percentile window (robust to a few outliers) maps the 0.5th-99.5th percentile of
  the frame to 1-254, so text stays visible whatever Bits Stored is.
- Extremes: 255 is reserved for values within 2% of the range of the frame's maximum, 0 for
  values within 2% of its minimum. Text is usually drawn at the brightest (or darkest) value
  present; speckle and anatomy reach it only in a few pixels. Detectors read 255/0 as "drawn
  at the extreme".

MONOCHROME1 shows low values bright, so it is inverted: detectors can assume "larger is
brighter". Colour has already been reduced to luminance by the codec (``DecodedPixels.grey``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
EXTREME_SHARE = 0.02
# Percentiles are estimated on every STEP-th row and column (about 16k values for 512x512).
_STEP = 4


def to_8bit(frame: np.ndarray, monochrome1: bool = False) -> np.ndarray:
    """A (rows, columns) array of any integer or float type -> uint8, brighter is larger."""
    sample = frame[::_STEP, ::_STEP]
    low, high = (float(v) for v in np.percentile(sample, (LOW_PERCENTILE, HIGH_PERCENTILE)))
    vmin, vmax = float(frame.min()), float(frame.max())
    if vmax <= vmin:
        return np.zeros(frame.shape, dtype=np.uint8)
    if high <= low:  # a flat window: stretch the full range of this frame instead
        low, high = vmin, vmax
    tolerance = EXTREME_SHARE * (vmax - vmin)
    if frame.dtype.kind in "iu" and frame.dtype.itemsize <= 2:
        info = np.iinfo(frame.dtype)
        values = np.arange(info.min, info.max + 1, dtype=np.float32)
        table = _scale(values, low, high, vmin + tolerance, vmax - tolerance, monochrome1)
        index: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = frame.view(
            np.uint8 if frame.dtype.itemsize == 1 else np.uint16
        )
        if info.min < 0:  # two's complement bit patterns: the table starts at the most negative value
            table = np.roll(table, info.min)
        out: np.ndarray = np.take(table, index)  # same as table[index], twice as fast
        return out
    return _scale(frame.astype(np.float32), low, high, vmin + tolerance, vmax - tolerance, monochrome1)


def _scale(values: np.ndarray, low: float, high: float, bottom: float, top: float, monochrome1: bool) -> np.ndarray:
    scaled = np.clip(1.0 + (values - np.float32(low)) * np.float32(253.0 / (high - low)), 1, 254)
    out: np.ndarray = scaled.astype(np.uint8)
    out[values >= top] = 255
    out[values <= bottom] = 0
    if monochrome1:
        np.subtract(255, out, out=out)
    return out
