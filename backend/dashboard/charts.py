"""Charts drawn here as inline SVG: no script, no library, nothing fetched, so the admin's strict
Content-Security-Policy has nothing to block. Colours are presentation attributes, every text is
escaped, and each chart has a text alternative (role="img", <title>, one <title> per mark)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 24
AXIS = "#666"
GRID = "#ddd"
TEXT = "#333"


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: list[float | None]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 8 times 10^k at or above value (1 for nothing to show): a quarter of
    it, the grid's step, is then a short number too."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 8, 10):
        if value <= step * base:
            return step * base
    return 10 * base


def _number(value: float) -> str:
    if value >= 10 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0")


class _Frame:
    def __init__(self, times: list[datetime], top: float, unit: str) -> None:
        self.times = times
        self.top = top
        self.unit = unit
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM
        self.slot = self.plot_w / max(len(times), 1)

    def x(self, i: float) -> float:
        return LEFT + i * self.slot

    def y(self, value: float) -> float:
        return TOP + self.plot_h * (1 - min(value, self.top) / self.top)

    def axes(self, label_every: int) -> list[str]:
        parts = []
        for k in range(5):
            value = self.top * k / 4
            y = self.y(value)
            parts.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>'
            )
            parts.append(
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{TEXT}">'
                f"{escape(_number(value))}</text>"
            )
        bottom = TOP + self.plot_h
        parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="{AXIS}"/>')
        for i, at in enumerate(self.times):
            if i % label_every == 0:
                parts.append(
                    f'<text x="{self.x(i):.1f}" y="{HEIGHT - 6}" font-size="11" fill="{TEXT}">'
                    f"{at:%H:%M}</text>"
                )
        parts.append(f'<text x="{LEFT}" y="14" font-size="11" fill="{TEXT}">{escape(self.unit)}</text>')
        return parts


def _legend(series: list[Series]) -> list[str]:
    parts, x = [], WIDTH - RIGHT
    for s in reversed(series):
        width = 18 + 7 * len(s.name)
        x -= width
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{s.colour}"/>')
        parts.append(f'<text x="{x + 14}" y="15" font-size="11" fill="{TEXT}">{escape(s.name)}</text>')
    return parts


def _svg(name: str, label: str, parts: list[str]) -> SafeString:
    body = "".join(parts)
    # Every text above is escaped and every number formatted here.
    return mark_safe(
        f'<svg class="cxrq-chart" data-chart="{escape(name)}" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>{body}</svg>'
    )


def stacked_bars(
    name: str, *, label: str, times: list[datetime], series: list[Series], unit: str, label_every: int = 10
) -> SafeString:
    """One bar per time bucket, the series stacked (values None count as 0)."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(times))]
    frame = _Frame(times, nice_ceiling(max(totals, default=0)), unit)
    parts = frame.axes(label_every) + _legend(series)
    width = max(frame.slot - 2, 1)
    for i, at in enumerate(times):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if not value:
                continue
            y_top, y_base = frame.y(base + value), frame.y(base)
            parts.append(
                f'<rect class="bar" x="{frame.x(i) + 1:.1f}" y="{y_top:.1f}" width="{width:.1f}" '
                f'height="{max(y_base - y_top, 0.5):.1f}" fill="{s.colour}">'
                f"<title>{at:%H:%M} {escape(s.name)}: {escape(_number(value))}</title></rect>"
            )
            base += value
    return _svg(name, label, parts)


def lines(
    name: str, *, label: str, times: list[datetime], series: list[Series], unit: str, label_every: int = 2
) -> SafeString:
    """One line per series through the centre of each bucket; a bucket without a value breaks it."""
    values = [v for s in series for v in s.values if v is not None]
    frame = _Frame(times, nice_ceiling(max(values, default=0)), unit)
    parts = frame.axes(label_every) + _legend(series)
    for s in series:
        run: list[str] = []
        segments: list[list[str]] = [run]
        for i, value in enumerate(s.values):
            if value is None:
                run = []
                segments.append(run)
                continue
            x, y = frame.x(i + 0.5), frame.y(value)
            run.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.colour}">'
                f"<title>{times[i]:%H:%M} {escape(s.name)}: {escape(_number(value))} {escape(unit)}</title>"
                "</circle>"
            )
        for segment in segments:
            if len(segment) > 1:
                parts.append(
                    f'<polyline points="{" ".join(segment)}" fill="none" stroke="{s.colour}" stroke-width="2"/>'
                )
    return _svg(name, label, parts)
