"""A small, cheap curve plot for the Train widget: losses (left) and validation (right).

Painted with QPainter from at most a few hundred points per curve: a plotting library's
text layout and tick placement on every redraw would stall the viewer during training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

#: Most points drawn per curve (longer histories are averaged into this many bins).
MAX_POINTS = 300
COLOURS = {
    "G": "#4fc3f7",
    "D": "#ff8a65",
    "S": "#aed581",
    "G_seg": "#ce93d8",
    "dice": "#aed581",
    "ssim": "#4fc3f7",
}
FALLBACK = ("#fff176", "#90a4ae", "#f48fb1")


@dataclass
class Curve:
    """One named line: x and y values (finite ones are drawn)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    markers: bool = False
    label: str = ""  # shown in the legend; the name if empty


@dataclass
class Panel:
    """One plot panel: a title, curves, and whether y is shown in log scale."""

    title: str
    curves: list[Curve] = field(default_factory=list)
    log_y: bool = False
    empty: str = "no data yet"


def reduce(x: Sequence[float], y: Sequence[float], n: int = MAX_POINTS) -> tuple[Any, Any]:
    """At most ``n`` points: the means of ``n`` equal bins of the (x, y) pairs."""
    xs = np.asarray(x, np.float64)
    ys = np.asarray(y, np.float64)
    if xs.size <= n:
        return xs, ys
    edges = np.linspace(0, xs.size, n + 1).astype(int)
    counts = np.diff(edges)
    return (
        np.add.reduceat(xs, edges[:-1]) / counts,
        np.add.reduceat(ys, edges[:-1]) / counts,
    )


def smooth(values: Sequence[float], window: int = 10) -> np.ndarray:
    """Running mean over ``window`` values (shorter at the start)."""
    array = np.asarray(values, np.float64)
    if array.size < 2:
        return array
    csum = np.cumsum(np.insert(array, 0, 0.0))
    idx = np.arange(1, array.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.1e}"


class CurvePlot(QWidget):
    """Side-by-side panels of line plots; :meth:`set_panels` schedules one repaint."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panels: list[Panel] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(190)
        self.paint_count = 0

    def set_panels(self, panels: list[Panel]) -> None:
        self.panels = panels
        self.update()  # Qt merges repeated requests into one paint

    # --- painting ---

    def paintEvent(self, event: object) -> None:
        self.paint_count += 1
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            palette = self.palette()
            painter.fillRect(self.rect(), palette.window())
            font = QFont(self.font())
            font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
            painter.setFont(font)
            n = max(1, len(self.panels))
            width = self.width() / n
            for i, panel in enumerate(self.panels):
                self._paint_panel(painter, panel, QRectF(i * width, 0, width, self.height()))
        finally:
            painter.end()

    def _paint_panel(self, painter: QPainter, panel: Panel, box: QRectF) -> None:
        text = self.palette().windowText().color()
        frame = QColor(text)
        frame.setAlpha(110)
        metrics = painter.fontMetrics()
        line = metrics.height()
        left, right, bottom = 6 + metrics.horizontalAdvance("0.000e+0"), 8, line + 6

        curves = _drawable(panel)

        # legend (names and latest values) in rows under the title
        width = max(10.0, box.width() - left - right)
        rows: list[list[tuple[str, QColor, float]]] = [[]]
        used = 0.0
        for curve, colour, _, y in curves:
            label = f"{curve.label or curve.name} {_fmt(float(y[-1]))}"
            advance = metrics.horizontalAdvance(label) + 10
            if rows[-1] and used + advance > width:
                rows.append([])
                used = 0.0
            rows[-1].append((label, colour, used))
            used += advance
        top = line + 2 + line * len(rows) + 2
        area = QRectF(
            box.left() + left, box.top() + top, width, max(10.0, box.height() - top - bottom)
        )

        painter.setPen(QPen(text))
        painter.drawText(
            QRectF(box.left(), box.top(), box.width(), line + 2),
            Qt.AlignmentFlag.AlignHCenter,
            panel.title,
        )
        for r, row in enumerate(rows):
            for label, colour, offset in row:
                painter.setPen(QPen(colour))
                painter.drawText(QPointF(area.left() + offset, box.top() + line * (r + 2)), label)
        painter.setPen(QPen(frame, 1))
        painter.drawRect(area)
        if not curves:
            painter.drawText(
                area, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, panel.empty
            )
            return

        tf = np.log10 if panel.log_y else (lambda v: v)
        x0, x1, y0, y1 = _limits(curves, tf)

        painter.setPen(QPen(text))
        for value, align in ((y1, Qt.AlignmentFlag.AlignTop), (y0, Qt.AlignmentFlag.AlignBottom)):
            label = _fmt(10**value if panel.log_y else value)
            row = area.top() if align == Qt.AlignmentFlag.AlignTop else area.bottom() - line
            painter.drawText(
                QRectF(box.left(), row, left - 4, line), Qt.AlignmentFlag.AlignRight | align, label
            )
        axis_row = QRectF(area.left(), area.bottom() + 2, area.width(), line)
        painter.drawText(axis_row, Qt.AlignmentFlag.AlignLeft, f"{x0:.0f}")
        painter.drawText(axis_row, Qt.AlignmentFlag.AlignHCenter, "iteration")
        painter.drawText(axis_row, Qt.AlignmentFlag.AlignRight, f"{x1:.0f}")

        self._paint_curves(painter, area, curves, (x0, x1, y0, y1), tf)

    @staticmethod
    def _paint_curves(
        painter: QPainter, area: QRectF, curves: list[Any], limits: tuple[float, ...], tf: Any
    ) -> None:
        x0, x1, y0, y1 = limits
        painter.save()
        painter.setClipRect(area)
        for curve, colour, x, y in curves:
            painter.setPen(QPen(colour, 1.5))
            px = area.left() + (x - x0) / (x1 - x0) * area.width()
            py = area.bottom() - (tf(y) - y0) / (y1 - y0) * area.height()
            path = QPainterPath(QPointF(px[0], py[0]))
            for a, b in zip(px[1:], py[1:], strict=True):
                path.lineTo(a, b)
            painter.drawPath(path)
            if curve.markers or px.size == 1:
                painter.setBrush(colour)
                for a, b in zip(px, py, strict=True):
                    painter.drawEllipse(QPointF(a, b), 2.2, 2.2)
                painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.restore()


def _drawable(panel: Panel) -> list[tuple[Curve, QColor, np.ndarray, np.ndarray]]:
    """The panel's curves with something to draw: reduced, finite (and > 0 in log scale)."""
    curves = []
    for k, curve in enumerate(panel.curves):
        x, y = reduce(curve.x, curve.y)
        ok = np.isfinite(x) & np.isfinite(y)
        if panel.log_y:
            ok &= y > 0
        if ok.any():
            colour = QColor(COLOURS.get(curve.name, FALLBACK[k % len(FALLBACK)]))
            curves.append((curve, colour, x[ok], y[ok]))
    return curves


def _limits(curves: list[Any], tf: Any) -> tuple[float, float, float, float]:
    """x and (transformed) y limits of the curves, never empty, y padded by 5 %."""
    xs = np.concatenate([c[2] for c in curves])
    ys = np.concatenate([c[3] for c in curves])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(tf(ys).min()), float(tf(ys).max())
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    return x0, x1, y0 - pad, y1 + pad
