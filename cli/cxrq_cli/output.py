"""What the CLI prints: rich tables for people, JSON and CSV for programs."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

ENDED = ("succeeded", "failed", "cancelled", "deleted")
STYLES = {
    "succeeded": "green",
    "failed": "red",
    "refused": "red",
    "cancelled": "yellow",
    "deleted": "dim",
    "queued": "cyan",
    "in_progress": "blue",
}


def stdout_console() -> Console:
    """Tables on stdout: the terminal's width, or 160 columns when piped (rich would take 80)."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, soft_wrap=False, width=160 if piped else None)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def status_text(status: str) -> Text:
    return Text(status, style=STYLES.get(status, ""))


def probabilities(job: dict | None) -> list[tuple[str, float]]:
    """The result's probabilities, highest first."""
    result = (job or {}).get("result") or {}
    probs = result.get("probabilities") or {}
    return sorted(((k, float(v)) for k, v in probs.items()), key=lambda kv: -kv[1])


def top_findings(job: dict | None, n: int = 3) -> str:
    return ", ".join(f"{label} {p:.2f}" for label, p in probabilities(job)[:n])


def untrained(jobs: list[dict | None]) -> bool:
    return any(
        ((j or {}).get("result") or {}).get("provenance", {}).get("weights") == "untrained" for j in jobs
    )


UNTRAINED_NOTE = (
    "[yellow]Note:[/] these results come from the untrained fallback model (weights: untrained): "
    "the probabilities are not clinically meaningful."
)


def submit_table(items: list[dict]) -> Table:
    table = Table(title=None, header_style="bold", expand=False)
    table.add_column("file", overflow="fold", ratio=1)
    table.add_column("job id", no_wrap=True, min_width=36)  # never cut: it is what the other commands take
    table.add_column("status", no_wrap=True)
    table.add_column("top findings / error", overflow="fold", ratio=2)
    for item in items:
        error = item.get("error")
        detail = (
            f"{error['code']}: {error['message']}" if error else top_findings({"result": item.get("result")})
        )
        if item.get("cached") and detail:
            detail += " (cached result)"
        table.add_row(
            item["file"], item.get("job_id") or "-", status_text(item["status"]), Text(detail or "-")
        )
    return table


def job_table(job: dict) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("id", job.get("id", ""))
    table.add_row("status", status_text(job.get("status", "")))
    for key in ("priority", "image_format", "model_version", "created_at", "started_at", "finished_at"):
        if job.get(key):
            table.add_row(key.replace("_", " "), str(job[key]))
    if job.get("attempts"):
        table.add_row("attempts", str(job["attempts"]))
    queue = job.get("queue")
    if queue:
        eta = queue.get("eta_seconds")
        eta_text = f", about {eta:.0f} s" if isinstance(eta, (int, float)) else ""
        table.add_row("queue", f"{queue.get('jobs_ahead', '?')} jobs ahead{eta_text}")
    if job.get("cancel_requested_at") and job.get("status") not in ENDED:
        table.add_row("cancel", f"requested at {job['cancel_requested_at']}")
    if job.get("error"):
        table.add_row("error", f"{job['error'].get('code')}: {job['error'].get('message')}")
    findings = top_findings(job)
    if findings:
        table.add_row("top findings", findings)
    return table


def result_table(job: dict) -> Table:
    result = job.get("result") or {}
    provenance = result.get("provenance") or {}
    caption = ", ".join(
        f"{k}: {provenance[k]}" for k in ("model_version", "weights", "precision") if provenance.get(k)
    )
    table = Table(title=f"job {job.get('id')}", caption=caption or None, header_style="bold")
    table.add_column("pathology", no_wrap=True)
    table.add_column("probability", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for label, p in probabilities(job):
        bar = "█" * round(p * 20)
        table.add_row(label, f"{p:.4f}", Text(bar, style="red" if p >= 0.5 else "cyan"))
    return table


def result_csv(job: dict) -> str:
    """One row per pathology, in the model's order (its `provenance.labels`), for spreadsheets."""
    result = job.get("result") or {}
    probs = result.get("probabilities") or {}
    labels = (result.get("provenance") or {}).get("labels") or list(probs)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job_id", "pathology", "probability"])
    for label in labels:
        if label in probs:
            writer.writerow([job.get("id"), label, probs[label]])
    return out.getvalue()


def list_table(jobs: list[dict], width: int = 160) -> Table:
    """Narrower than 110 columns, the priority and the creation time are left out: the ids stay whole."""
    wide = width >= 110
    table = Table(header_style="bold")
    table.add_column("job id", no_wrap=True, min_width=36)
    table.add_column("status", no_wrap=True, min_width=11)
    if wide:
        table.add_column("priority", no_wrap=True, min_width=7)
        table.add_column("created", no_wrap=True, min_width=19)
    table.add_column("top findings / error", overflow="fold")
    for job in jobs:
        error = job.get("error")
        detail = f"{error.get('code')}: {error.get('message')}" if error else top_findings(job)
        created = (job.get("created_at") or "")[:19].replace("T", " ")
        middle = [job.get("priority", "") or "", created] if wide else []
        table.add_row(job.get("id", ""), status_text(job.get("status", "")), *middle, Text(detail or "-"))
    return table
