"""The one CSV of a result: the API's `GET /api/v1/jobs/{id}/result.csv`, the web client's download
and `cxrq result --format csv` (which downloads the API's) all come from here.

Columns, in order: job_id, reference, finding, probability, operating_point, scale, positive,
model_version, weights. One row per finding, in the model's label order.

`probability` and `operating_point` are on the SAME scale, the model's raw sigmoid output (`scale`
says `raw`): a result stores probabilities after torchxrayvision's op_norm, which moves each label's
operating threshold t to 0.5 (backend/web/thresholds.py), so the raw probability is recovered
exactly by inverting it: q < 0.5 -> q * 2t, else 1 - (1 - q) * 2(1 - t). `positive` is
`true`/`false` (raw probability >= raw threshold, the same as the stored one >= 0.5); a label the
model has no threshold for has no raw value to give (op_norm stores 0.5 for it), so its
probability, operating_point and positive are empty. Where the thresholds cannot be read at all
(the package missing), the stored values are written with `scale` `calibrated` and the operating
point 0.5, so the two columns still share a scale. `weights` is `untrained` where the result's
provenance says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from backend.jobs.models import Job, JobStatus

COLUMNS = (
    "job_id",
    "reference",
    "finding",
    "probability",
    "operating_point",
    "scale",
    "positive",
    "model_version",
    "weights",
)
CALIBRATED_OPERATING_POINT = 0.5


def raw_probability(stored: float, threshold: float) -> float:
    """The sigmoid output op_norm mapped to `stored`, for a label with raw threshold `threshold`."""
    if stored < CALIBRATED_OPERATING_POINT:
        return stored * 2 * threshold
    return 1 - (1 - stored) * 2 * (1 - threshold)


def _operating_points() -> dict[str, float | None]:
    from backend.web import thresholds  # ast-parsed from the installed package, cached

    return thresholds.operating_points()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.8f}"


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV injection");
# a reference may start with "-", so such a cell is written with a leading apostrophe, which
# spreadsheets show as text and hide.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def result_rows(job: Job) -> list[dict]:
    """One dict per finding (COLUMNS as keys, values as written); [] for a job with no result."""
    result = getattr(job, "result", None) if job.status == JobStatus.SUCCEEDED else None
    if result is None:
        return []
    provenance = result.provenance or {}
    points = _operating_points()
    labels = [k for k in (provenance.get("labels") or []) if k in result.probabilities]
    labels += sorted(k for k in result.probabilities if k not in labels)
    common = {
        "job_id": str(job.id),
        "reference": _cell(job.reference or ""),
        "model_version": provenance.get("model_version") or job.model_version,
        "weights": provenance.get("weights", ""),
    }
    rows = []
    for label in labels:
        stored = float(result.probabilities[label])
        if not points:  # no thresholds known: the stored scale, its operating point 0.5
            probability, point, scale = stored, CALIBRATED_OPERATING_POINT, "calibrated"
        elif (threshold := points.get(label)) is None:
            probability, point, scale = None, None, "raw"
        else:
            probability, point, scale = raw_probability(stored, threshold), threshold, "raw"
        positive = "" if point is None else ("true" if stored >= CALIBRATED_OPERATING_POINT else "false")
        rows.append(
            common
            | {
                "finding": label,
                "probability": _number(probability),
                "operating_point": _number(point),
                "scale": scale,
                "positive": positive,
            }
        )
    return [{column: row[column] for column in COLUMNS} for row in rows]


def as_csv(jobs: Iterable[Job]) -> str:
    """The header, then every job's rows (RFC 4180: CRLF line ends, quoted where needed)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for job in jobs:
        writer.writerows(result_rows(job))
    return out.getvalue()
