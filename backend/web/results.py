"""A result for people: findings sorted by probability with their operating points, the chart's
geometry (drawn as SVG by the template, no script, no inline style), and the downloads."""

from __future__ import annotations

from dataclasses import dataclass

from backend.jobs import csv_export
from backend.jobs.models import Job, JobStatus
from backend.jobs.serializers import CLIENT_PROVENANCE, CLIENT_TIMINGS
from backend.web import thresholds

# Provenance shown on the page: what the API gives a client, and the inference backend.
SHOWN_PROVENANCE = ("model_version", "weights", "weights_sha256", "backend", "precision", "preprocessing")
TIMING_LABELS = {
    "preprocess_ms": "Preprocessing",
    "inference_ms": "Inference (batch)",
    "inference_ms_per_image": "Inference per image",
    "postprocess_ms": "Postprocessing",
    "batch_size": "Batch size",
}


@dataclass(frozen=True)
class Finding:
    label: str
    probability: float
    operating_point: float | None  # the raw (sigmoid) threshold; None: the model has none

    @property
    def name(self) -> str:
        return self.label.replace("_", " ")

    @property
    def above(self) -> bool | None:
        if self.operating_point is None:
            return None
        return self.probability >= thresholds.CALIBRATED_OPERATING_POINT

    @property
    def percent(self) -> str:
        return f"{self.probability * 100:.1f}%"

    @property
    def raw(self) -> float | None:
        """The model's raw output, on the same scale as `operating_point` (the CSV's probability:
        backend/jobs/csv_export.py inverts op_norm); None where the label has no operating point."""
        if self.operating_point is None:
            return None
        return csv_export.raw_probability(self.probability, self.operating_point)


def findings(job: Job) -> list[Finding]:
    """The result's probabilities, highest first (ties by label), with each label's operating point."""
    result = getattr(job, "result", None) if job.status == JobStatus.SUCCEEDED else None
    if result is None:
        return []
    points = thresholds.operating_points()
    rows = [
        Finding(label=label, probability=float(p), operating_point=points.get(label))
        for label, p in result.probabilities.items()
    ]
    return sorted(rows, key=lambda f: (-f.probability, f.label))


@dataclass(frozen=True)
class Bar:
    finding: Finding
    y: float
    text_y: float
    width: float


@dataclass(frozen=True)
class Chart:
    """Coordinates in the SVG's own units (the viewBox): it scales to the page's width."""

    bars: list[Bar]
    width: int
    height: int
    label_width: int
    bar_area: int
    row_height: int
    bar_height: int
    threshold_x: float
    has_operating_points: bool

    @property
    def bar_x(self) -> int:
        return self.label_width

    @property
    def value_x(self) -> int:
        return self.label_width + self.bar_area + 8

    @property
    def ticks(self) -> list[tuple[float, str]]:
        return [(self.label_width + self.bar_area * v, f"{v:.2g}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)]

    @property
    def axis_y(self) -> int:
        return self.height - 18


def chart(rows: list[Finding]) -> Chart:
    label_width, bar_area, value_width = 220, 320, 64
    row_height, bar_height, top = 24, 16, 6
    bars = [
        Bar(
            finding=f,
            y=top + i * row_height,
            text_y=top + i * row_height + bar_height - 3,
            width=round(max(0.0, min(1.0, f.probability)) * bar_area, 2),
        )
        for i, f in enumerate(rows)
    ]
    return Chart(
        bars=bars,
        width=label_width + bar_area + value_width,
        height=top + len(rows) * row_height + 24,
        label_width=label_width,
        bar_area=bar_area,
        row_height=row_height,
        bar_height=bar_height,
        threshold_x=label_width + bar_area * thresholds.CALIBRATED_OPERATING_POINT,
        has_operating_points=any(f.operating_point is not None for f in rows),
    )


def provenance(job: Job) -> dict:
    result = getattr(job, "result", None)
    if result is None:
        return {}
    keys = dict.fromkeys((*CLIENT_PROVENANCE, "backend"))
    return {k: result.provenance[k] for k in keys if k in result.provenance}


def shown_provenance(job: Job) -> list[tuple[str, str]]:
    prov = provenance(job)
    return [(k.replace("_", " "), str(prov[k])) for k in SHOWN_PROVENANCE if prov.get(k) not in (None, "")]


def untrained(job: Job) -> bool:
    return provenance(job).get("weights") == "untrained"


def timings(job: Job) -> list[tuple[str, str]]:
    result = getattr(job, "result", None)
    if result is None:
        return []
    out = []
    for key in CLIENT_TIMINGS:
        value = result.timings.get(key)
        if value is None:
            continue
        shown = f"{value:.1f} ms" if "_ms" in key else str(value)
        out.append((TIMING_LABELS[key], shown))
    return out
