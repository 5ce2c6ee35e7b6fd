"""A PNG chart of a benchmark run (Pillow only): images/s, and where an image's time goes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = {"reference": (150, 150, 150), "default": (40, 110, 200), "fast": (230, 120, 30)}
REFUSED = (235, 190, 150)  # a precision fast mode tried and did not keep (rows named "fast:<precision>")


def _colour(name: str) -> tuple[int, int, int]:
    return COLOURS.get(name, REFUSED)


def _font(size: int):
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def plot(result: dict, rows: list, path: Path) -> None:
    width, height = 1000, 460
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    title, label, small = _font(20), _font(15), _font(13)
    draw.text((20, 12), "cxrq inference engine: sample X-rays on this machine", fill="black", font=title)
    draw.text(
        (20, 40), f"{result['machine']['cpu']}, {result['machine']['cores']} cores", fill="gray", font=small
    )

    # Left: images per second.
    left, top, plot_h = 60, 90, 300
    gap = 40 if len(rows) <= 3 else 16
    bar_w = min(90, (420 - gap * (len(rows) - 1)) // max(1, len(rows)))
    best = max(s.img_s for _, _, s in rows)
    draw.text((left, top - 25), "images / s (higher is better)", fill="black", font=label)
    for i, (name, what, stats) in enumerate(rows):
        x = left + i * (bar_w + gap)
        h = int(plot_h * stats.img_s / best)
        draw.rectangle([x, top + plot_h - h, x + bar_w, top + plot_h], fill=_colour(name))
        draw.text((x, top + plot_h - h - 20), f"{stats.img_s:.1f}", fill="black", font=label)
        if len(rows) <= 3:
            draw.text((x, top + plot_h + 6), name, fill="black", font=label)
            draw.text((x, top + plot_h + 26), what.split(" ")[0], fill="gray", font=small)
        else:  # narrow bars: names alternate between two lines (the backend is in the right panel)
            draw.text((x, top + plot_h + 6 + 16 * (i % 2)), name, fill="black", font=small)

    # Right: ms per image, preprocessing + inference (medians), stacked horizontally.
    left2, top2, span = 500, 110, 440
    draw.text((left2, top2 - 45), "ms per image, median (lower is better)", fill="black", font=label)
    medians = [
        (name, float(np.median(s.preprocess_ms)), float(np.median(s.inference_ms))) for name, _, s in rows
    ]
    worst = max(p + q for _, p, q in medians)
    for i, (name, pre, inf) in enumerate(medians):
        step = 80 if len(rows) <= 3 else max(40, 240 // len(rows))
        bar_h = step - 44 if step >= 80 else step - 18
        y = top2 + i * step
        w_pre, w_inf = int(span * pre / worst), int(span * inf / worst)
        draw.rectangle([left2, y, left2 + w_pre, y + bar_h], fill=(120, 190, 120))
        draw.rectangle([left2 + w_pre, y, left2 + w_pre + w_inf, y + bar_h], fill=_colour(name))
        draw.text(
            (left2, y + bar_h + 2),
            f"{name}: preprocessing {pre:.1f} + inference {inf:.1f}",
            fill="black",
            font=small,
        )
    draw.rectangle([left2, top2 + 250, left2 + 14, top2 + 264], fill=(120, 190, 120))
    draw.text((left2 + 20, top2 + 249), "preprocessing (decode included)", fill="black", font=small)
    note = (
        f"speed-up vs reference: default {result['default_speedup']}x, fast {result['fast_speedup']}x; "
        f"max |dprob| default {result['max_abs_diff_default']:.1g}, fast {result['max_abs_diff_fast']:.2g}"
    )
    draw.text((20, height - 30), note, fill="black", font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
