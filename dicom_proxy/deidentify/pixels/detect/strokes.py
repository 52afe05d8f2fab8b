"""The default detector: stroke-like components joined into text lines (OpenCV).

Burned-in annotation is rendered text: strokes 1-4 px wide, brighter or darker than what is
around them, 4-20 px tall, laid out in horizontal lines, usually on flat background near the
image's edges, sometimes over anatomy. The steps, each a few OpenCV calls on a uint8 frame:

1. Strokes: white top-hat and black top-hat with a window wider than any stroke keep thin
   structures that stand out from their surroundings, bright or dark (text of either polarity).
2. Lines: a horizontal closing joins the strokes of neighbouring characters and words into one
   component per line; a small vertical closing joins dots and accents to their letters.
3. Filter each line by height (text size), width/height (a line, not a blob), and by how many
   stroke pixels and character-sized pieces it holds (text has several, edges have one).
4. Boxes get a margin, so antialiased edges of the glyphs are covered too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dicom_proxy.deidentify.pixels.detect import FoundBox, Hints
from dicom_proxy.deidentify.pixels.rules import Box

# One thread per call: the node runs several objects in parallel, and OpenCV's own pool would
# compete with them for the same two cores.
cv2.setNumThreads(1)


@dataclass(frozen=True)
class StrokeDetector:
    """Finds text lines 4-20 px tall (glyph height, antialiasing included) in a uint8 frame."""

    name: str = "opencv"
    min_height: int = 4
    max_height: int = 28
    # A stroke must differ from its neighbourhood by this much (0-255 after windowing).
    contrast: int = 48
    # Window of the top-hats: wider than the thickest stroke of a 20 px bold font.
    stroke_window: int = 9
    # Horizontal gap bridged between characters and words of one line.
    join_gap: int = 7
    margin: int = 2
    # Straight runs at least this long (vertical; twice that horizontal) are not glyph strokes.
    long_line: int = 32

    def detect(self, frame: np.ndarray, hints: Hints) -> tuple[FoundBox, ...]:
        window = cv2.getStructuringElement(cv2.MORPH_RECT, (self.stroke_window, self.stroke_window))
        found: list[FoundBox] = []
        # Each polarity on its own: the gaps between dark letters are bright "strokes" too.
        for operation in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT):
            response = cv2.morphologyEx(frame, operation, window)
            _, strokes = cv2.threshold(response, self._threshold(response), 255, cv2.THRESH_BINARY)
            extreme = frame >= 250 if operation == cv2.MORPH_TOPHAT else frame <= 5
            found.extend(self._lines(self._without_long_lines(strokes), extreme))
        return tuple(found)

    def _threshold(self, response: np.ndarray) -> float:
        """`contrast`, raised on textured images (speckle, trabecular bone) to what only the
        strongest 4% of responses reach, but never above what saturated text reaches."""
        textured = float(np.percentile(response[::4, ::4], 96))
        return min(max(float(self.contrast), textured), 160.0)

    def _without_long_lines(self, strokes: np.ndarray) -> np.ndarray:
        """Remove straight lines longer than any glyph (rulers, edges, calipers): otherwise
        they join the text lines they touch into one component too tall to be text."""
        for size in ((1, self.long_line), (self.long_line * 2, 1)):
            kernel = cv2.getStructuringElement(cv2.MORPH_RECT, size)
            lines = cv2.morphologyEx(strokes, cv2.MORPH_OPEN, kernel)
            strokes = cv2.subtract(strokes, lines)
        return strokes

    def _lines(self, strokes: np.ndarray, extreme: np.ndarray) -> list[FoundBox]:
        joined = cv2.morphologyEx(
            strokes, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (self.join_gap, 1))
        )
        count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        lines: list[_Piece] = []
        pieces: list[_Piece] = []
        for left, top, width, height, _area in stats[1:count]:
            piece = self._piece(strokes, extreme, int(left), int(top), int(width), int(height))
            if piece is not None:
                (lines if piece.score > 0 else pieces).append(piece)
        lines = _grow(lines, pieces)
        rows, columns = strokes.shape
        found: list[FoundBox] = []
        for line in lines:
            m = self.margin + line.height // 8
            box = Box(
                top=max(line.top - m, 0),
                left=max(line.left - m, 0),
                bottom=min(line.top + line.height + m, rows),
                right=min(line.left + line.width + m, columns),
            )
            found.append(FoundBox(box, self.name, line.score))
        return found

    def _piece(
        self, strokes: np.ndarray, extreme: np.ndarray, left: int, top: int, width: int, height: int
    ) -> _Piece | None:
        """A component of glyph size and density, scored: > 0 for a text line on its own, 0
        for a piece (a short word, a glyph) that counts only next to a line; None otherwise.

        Text stands out from what is around it: either its surroundings are flat (few strokes
        in a ring around the line), or its strokes are drawn at the extremes of the window
        (white or black text over anatomy) and still denser than the texture around them.
        """
        if not self.min_height <= height <= self.max_height or width < 2:
            return None
        region = strokes[top : top + height, left : left + width]
        ink = cv2.countNonZero(region)
        fill = ink / float(width * height)
        if not 0.08 <= fill <= 0.85:
            return None
        pad = max(height // 2, 3)
        rows, columns = strokes.shape
        top0, left0 = max(top - pad, 0), max(left - pad, 0)
        bottom0, right0 = min(top + height + pad, rows), min(left + width + pad, columns)
        ring_area = (bottom0 - top0) * (right0 - left0) - width * height
        ring = cv2.countNonZero(strokes[top0:bottom0, left0:right0]) - ink
        texture = (ring / ring_area) / fill if ring_area > 0 else 0.0
        piece = _Piece(left, top, width, height, 0.0)
        if width < height * 1.2 or fill > 0.75 or texture > 0.6:
            return piece  # a blob, a glyph (an L/R marker) or texture: not a line on its own
        glyphs = cv2.connectedComponents(region, connectivity=8)[0] - 1
        if width >= 2 * height and glyphs < 2:
            return piece  # a long single stroke: an edge or a ruler line, not letters
        if texture > 0.25:
            saturated = cv2.countNonZero(
                cv2.bitwise_and(region, extreme[top : top + height, left : left + width].view(np.uint8))
            )
            # Over texture, only a clear line: several glyphs, mostly drawn at the extremes.
            if saturated < 0.25 * ink or width < 2.5 * height or glyphs < 3:
                return piece
        return _Piece(left, top, width, height, min(1.0, 0.5 + 0.1 * glyphs) * (1.0 - texture))


@dataclass(frozen=True)
class _Piece:
    left: int
    top: int
    width: int
    height: int
    score: float

    def beside(self, other: _Piece) -> bool:
        """On the same text line and close: rows overlap by most of the smaller height,
        heights within a factor 2, horizontal gap at most 1.5 times the taller height."""
        overlap = min(self.top + self.height, other.top + other.height) - max(self.top, other.top)
        low, high = sorted((self.height, other.height))
        if overlap < 0.6 * low or high > 2 * low:
            return False
        gap = max(other.left - (self.left + self.width), self.left - (other.left + other.width))
        return gap <= 1.5 * high


def _grow(lines: list[_Piece], pieces: list[_Piece]) -> list[_Piece]:
    """Lines absorb the pieces beside them (the rest of a line split at a wide word gap or
    crossing a bright structure); pieces beside no line are dropped."""
    grown = list(lines)
    changed = True
    while changed and pieces:
        changed = False
        for piece in list(pieces):
            host = next((line for line in grown if line.beside(piece)), None)
            if host is not None:
                grown.append(_Piece(piece.left, piece.top, piece.width, piece.height, host.score))
                pieces.remove(piece)
                changed = True
    return grown
