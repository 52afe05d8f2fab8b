"""The default detector: stroke-like components joined into text lines (OpenCV).

Burned-in annotation is rendered text: strokes 1-4 px wide, brighter or darker than what is
around them, 4-20 px tall, laid out in horizontal lines, usually on flat background near the
image's edges, sometimes over anatomy. The steps, each a few OpenCV calls on a uint8 frame,
once per polarity (white text, black text):

1. Strokes: a top-hat (black top-hat for dark text) with a window wider than any stroke keeps
   thin structures that stand out from their surroundings; the threshold rises on textured
   images (speckle) to what only their strongest responses reach. Straight runs longer than
   any glyph (rulers, edges) are removed so they cannot join lines into one block.
2. Lines: a horizontal closing joins the strokes of neighbouring characters into components.
3. Filter every component at once (numpy over OpenCV's component statistics and an integral
   image): height 4-28 px, ink density, and how much it stands out from a ring around it.
   A component is a line on its own when it is wide, has several glyphs and a flat ring, or,
   over texture, strokes mostly at the extremes of the window. Shorter pieces (a word cut off
   by a wide gap, a part crossing a bright structure) count only beside such a line.
4. Boxes get a margin (2 px plus an eighth of the height) so antialiased edges are covered.
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

# Stroke density around a line, relative to its own, below which its surroundings count as flat.
FLAT = 0.15


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
    # Horizontal gap bridged between the characters of one line.
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
            strokes = self._without_long_lines(strokes)
            if operation == cv2.MORPH_TOPHAT:
                _, extreme = cv2.threshold(frame, 254, 255, cv2.THRESH_BINARY)
            else:
                _, extreme = cv2.threshold(frame, 0, 255, cv2.THRESH_BINARY_INV)
            found.extend(self._lines(strokes, cv2.bitwise_and(strokes, extreme)))
            if operation == cv2.MORPH_TOPHAT:
                # White text drawn at the brightest value (the normaliser's 255) over texture:
                # those pixels alone are the glyphs, free of the texture the top-hat keeps too.
                # (Black text sits on a bright plate in practice: the black top-hat finds it.)
                extreme = self._without_long_lines(extreme)
                found.extend(self._lines(extreme, extreme))
        return tuple(found)

    def _threshold(self, response: np.ndarray) -> float:
        """`contrast`, raised on textured images (speckle, trabecular bone) to what only the
        strongest 4% of responses reach, but never above what saturated text reaches."""
        share = 0.96 * np.float32(response.size)  # the same float32 the histogram's sum gives
        if self.contrast > 0:
            # Most frames are not textured: their strongest 4% stay below `contrast`. One count
            # proves it (0.02 ms); the histogram costs 0.3 ms on a frame of mostly zeros.
            _, above = cv2.threshold(response, self.contrast - 1, 1, cv2.THRESH_BINARY)
            if response.size - cv2.countNonZero(above) >= share:
                return float(self.contrast)
        histogram = cv2.calcHist([response], [0], None, [256], [0, 256]).ravel()
        cumulative = np.cumsum(histogram)
        textured = float(np.searchsorted(cumulative, share))
        return min(max(float(self.contrast), textured), 160.0)

    def _without_long_lines(self, strokes: np.ndarray) -> np.ndarray:
        """Remove straight lines longer than any glyph (rulers, edges, calipers): otherwise
        they join the text lines they touch into one component too tall to be text."""
        if not cv2.countNonZero(strokes):
            return strokes
        for size in ((1, self.long_line), (self.long_line * 2, 1)):
            kernel = cv2.getStructuringElement(cv2.MORPH_RECT, size)
            lines = cv2.morphologyEx(strokes, cv2.MORPH_OPEN, kernel)
            strokes = cv2.subtract(strokes, lines)
        return strokes

    def _lines(self, strokes: np.ndarray, saturated: np.ndarray) -> list[FoundBox]:
        if not cv2.countNonZero(strokes):
            return []  # most frames have no saturated pixels, many no strokes of one polarity
        joined = cv2.morphologyEx(
            strokes, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (self.join_gap, 1))
        )
        count, stats = _components(joined)
        boxes = stats[1:count, :4].astype(np.int64)
        tall = (boxes[:, 3] > self.max_height) & (boxes[:, 3] <= 8 * self.max_height) & (boxes[:, 2] >= boxes[:, 3])
        boxes = np.concatenate([boxes, self._bands(strokes, boxes[tall])])
        sums = (_integral_of_ones(strokes), _integral_of_ones(saturated))
        lines, pieces, failed = self._evaluate(strokes, boxes, sums)
        # A short line may touch the next one (close line spacing) and fail as one block: cut it.
        more_lines, more_pieces, _ = self._evaluate(strokes, self._bands(strokes, failed), sums)
        rows, columns = strokes.shape
        return [self._found(line, rows, columns) for line in _grow(lines + more_lines, pieces + more_pieces)]

    def _evaluate(
        self, strokes: np.ndarray, boxes: np.ndarray, sums: tuple[np.ndarray, np.ndarray]
    ) -> tuple[list[_Piece], list[_Piece], np.ndarray]:
        """Lines, pieces, and the flat boxes two text heights or taller that failed as lines."""
        left, top, width, height = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        sized = (height >= self.min_height) & (height <= self.max_height) & (width >= 2)
        left, top, width, height = left[sized], top[sized], width[sized], height[sized]
        ink = _box_sums(sums[0], top, left, top + height, left + width)
        fill = ink / np.maximum(width * height, 1)
        dense = (fill >= 0.08) & (fill <= 0.85)
        left, top, width, height, ink, fill = (a[dense] for a in (left, top, width, height, ink, fill))
        rows, columns = strokes.shape
        pad = np.maximum(height // 2, 3)
        top0, left0 = np.maximum(top - pad, 0), np.maximum(left - pad, 0)
        bottom0, right0 = np.minimum(top + height + pad, rows), np.minimum(left + width + pad, columns)
        ring_area = (bottom0 - top0) * (right0 - left0) - width * height
        ring = _box_sums(sums[0], top0, left0, bottom0, right0) - ink
        texture = np.where(ring_area > 0, ring / np.maximum(ring_area, 1) / np.maximum(fill, 1e-6), 0.0)
        extreme = _box_sums(sums[1], top, left, top + height, left + width)
        # Shape alone decides what can be a line: longer than tall, not a solid blob, not lost in texture.
        shaped = (width >= 1.2 * height) & (fill <= 0.75) & (texture <= 0.6)
        # Over texture, only a clear line: long, strokes mostly drawn at the extremes.
        clear = (texture <= FLAT) | ((extreme >= 0.25 * ink) & (width >= 2.5 * height))
        lines: list[_Piece] = []
        pieces: list[_Piece] = []
        failed: list[tuple[int, int, int, int]] = []
        for i in range(len(left)):
            piece = _Piece(int(left[i]), int(top[i]), int(width[i]), int(height[i]), 0.0)
            if shaped[i] and clear[i]:
                glyphs = self._glyphs(strokes, piece)
                needed = 3 if texture[i] > FLAT else 2
                if glyphs >= needed:
                    score = min(1.0, 0.5 + 0.1 * glyphs) * (1.0 - float(texture[i]))
                    lines.append(_Piece(piece.left, piece.top, piece.width, piece.height, score))
                    continue
            if piece.height >= 2 * self.min_height and texture[i] <= FLAT:
                failed.append((piece.left, piece.top, piece.width, piece.height))
            pieces.append(piece)
        return lines, pieces, np.asarray(failed, dtype=np.int64).reshape(-1, 4)

    def _bands(self, strokes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Cut each box at the rows where the ink thins out (lines of a block set with little
        spacing touch, descenders on ascenders): the boxes (left, top, width, height) of the
        bands of every box that has two or more."""
        bands: list[tuple[int, int, int, int]] = []
        for left, top, width, height in boxes:
            region = strokes[top : top + height, left : left + width]
            profile = cv2.reduce(region, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() / 255
            if not profile.any():
                continue
            inked = profile > 0.1 * _median(profile[profile > 0])
            found: list[tuple[int, int, int, int]] = []
            start = None
            for row, on in enumerate([*inked.tolist(), False]):
                if on and start is None:
                    start = row
                elif not on and start is not None:
                    columns = np.flatnonzero(region[start:row].any(axis=0))
                    if columns.size:
                        found.append(
                            (int(left + columns[0]), int(top + start), int(columns[-1] - columns[0] + 1), row - start)
                        )
                    start = None
            if len(found) > 1:
                bands += found
        return np.asarray(bands, dtype=np.int64).reshape(-1, 4)

    def _glyphs(self, strokes: np.ndarray, p: _Piece) -> int:
        """Letters inside a line: stroke components standing at least half the line's height
        (glyphs share a cap height; a cluster of speckle or an edge does not), or runs of
        well-inked columns."""
        region = strokes[p.top : p.top + p.height, p.left : p.left + p.width]
        count, stats = _components(region)
        tall = int(np.count_nonzero(stats[1:count, cv2.CC_STAT_HEIGHT] * 2 >= p.height))
        # Small fonts: antialiasing joins neighbouring letters, but columns between them hold
        # at most a pixel or two of ink, where a letter's columns hold more.
        profile = cv2.reduce(region, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255
        inked = profile > max(2, p.height // 4)
        runs = int(inked[0]) + int(np.count_nonzero(inked[1:] > inked[:-1]))  # runs start where ink begins
        return max(tall, runs)

    def _found(self, line: _Piece, rows: int, columns: int) -> FoundBox:
        m = self.margin + line.height // 8
        box = Box(
            top=max(line.top - m, 0),
            left=max(line.left - m, 0),
            bottom=min(line.top + line.height + m, rows),
            right=min(line.left + line.width + m, columns),
        )
        return FoundBox(box, self.name, line.score)


def _components(binary: np.ndarray) -> tuple[int, np.ndarray]:
    """Count and statistics of the 8-connected components of a 0/255 image. Grana's block-based
    algorithm: the same components as OpenCV's default, a third of its time here (measured:
    0.35 against 1.1 ms on 512x512, one thread)."""
    count, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return int(count), stats


def _median(values: np.ndarray) -> float:
    """np.median for the short profiles here, without its overhead (25 against 2 us)."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _integral_of_ones(binary: np.ndarray) -> np.ndarray:
    """Integral image of a 0/255 image counted in pixels (255 -> 1)."""
    _, ones = cv2.threshold(binary, 0, 1, cv2.THRESH_BINARY)
    integral: np.ndarray = cv2.integral(ones, sdepth=cv2.CV_32S)
    return integral


def _box_sums(
    integral: np.ndarray, top: np.ndarray, left: np.ndarray, bottom: np.ndarray, right: np.ndarray
) -> np.ndarray:
    """Sums over [top, bottom) x [left, right) for many boxes from one integral image."""
    total: np.ndarray = (
        integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    ).astype(np.float64)
    return total


@dataclass(frozen=True)
class _Piece:
    left: int
    top: int
    width: int
    height: int
    score: float


def _grow(lines: list[_Piece], pieces: list[_Piece]) -> list[_Piece]:
    """Lines absorb the pieces beside them (the rest of a line split at a wide word gap or
    crossing a bright structure); pieces beside no line are dropped."""
    grown = list(lines)
    frontier = list(lines)
    remaining = pieces
    while frontier and remaining:
        near = _beside(remaining, frontier)
        found = np.any(near, axis=1)
        host: np.ndarray = near.argmax(axis=1)  # the first line of the frontier beside each piece
        added = [
            _Piece(piece.left, piece.top, piece.width, piece.height, frontier[int(host[i])].score)
            for i, piece in enumerate(remaining)
            if found[i]
        ]
        grown += added
        frontier, remaining = added, [piece for i, piece in enumerate(remaining) if not found[i]]
    return grown


def _beside(pieces: list[_Piece], lines: list[_Piece]) -> np.ndarray:
    """(pieces, lines) booleans: piece i is part of the same text as line j. Heights within a
    factor 2, and either on the same line (rows overlap by most of the smaller height, gap at
    most 1.5 times the taller height) or the next line of the same block (columns overlap by
    most of the narrower piece, vertical gap at most the taller height)."""
    p = np.array([(x.left, x.top, x.width, x.height) for x in pieces], dtype=np.int64)[:, None, :]
    q = np.array([(x.left, x.top, x.width, x.height) for x in lines], dtype=np.int64)[None, :, :]
    p_left, p_top, p_width, p_height = (p[..., k] for k in range(4))
    q_left, q_top, q_width, q_height = (q[..., k] for k in range(4))
    low, high = np.minimum(p_height, q_height), np.maximum(p_height, q_height)
    rows = np.minimum(p_top + p_height, q_top + q_height) - np.maximum(p_top, q_top)
    gap = np.maximum(p_left - (q_left + q_width), q_left - (p_left + p_width))
    same_line = (rows >= 0.6 * low) & (gap <= 1.5 * high)
    columns = np.minimum(p_left + p_width, q_left + q_width) - np.maximum(p_left, q_left)
    vertical = np.maximum(p_top - (q_top + q_height), q_top - (p_top + p_height))
    next_line = (columns >= 0.6 * np.minimum(p_width, q_width)) & (vertical <= high)
    near: np.ndarray = (high <= 2 * low) & (same_line | next_line)
    return near
