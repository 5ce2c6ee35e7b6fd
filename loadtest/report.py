"""Summaries, plots and the markdown report of load-test runs (from samples.csv and queue.csv)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

# Seed 004 (t3.large, 2 vCPU; a different machine: the `reference` configuration is the
# like-for-like comparison).
SEED = {
    10: {"cache_miss": (1100, 2800), "cache_hit": (68, 230)},
    20: {"cache_miss": (6000, 9700), "cache_hit": (110, 370)},
}
SCENARIOS = ("cache_miss", "cache_hit")
KNEE_P95_MS = 5000


def load_samples(outdir: Path) -> list[tuple[float, str, str, float, bool]]:
    path = outdir / "samples.csv"
    if not path.exists():
        return []
    rows = []
    with open(path) as fh:
        for row in csv.reader(fh):
            if len(row) == 5:
                rows.append((float(row[0]), row[1], row[2], float(row[3]), row[4] == "1"))
    return rows


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _stats(values: list[float]) -> dict:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99), "n": len(values)}


def summarize(
    outdir: Path,
    *,
    config: str,
    label: str,
    users: int | None,
    step_seconds: int | None,
    step_start: int = 10,
    step_users: int = 10,
) -> dict:
    samples = load_samples(outdir)
    t0 = min((s[0] for s in samples), default=0.0)
    t1 = max((s[0] for s in samples), default=0.0)
    duration = max(t1 - t0, 1e-9)
    out: dict = {"config": config, "label": label, "users": users, "duration_s": round(duration, 1)}
    for scenario in SCENARIOS:
        e2e = [s for s in samples if s[1] == "E2E" and s[2] == scenario]
        upload = [s for s in samples if s[1] != "E2E" and s[2] == f"upload {scenario}"]
        ok = [s[3] for s in e2e if s[4]]
        out[scenario] = {
            "e2e_ms": _stats(ok),
            "upload_ms": _stats([s[3] for s in upload if s[4]]),
            "requests": len(upload),
            "failures": sum(not s[4] for s in e2e),
            "results_per_s": round(len(ok) / duration, 2),
        }
    out["requests_total"] = sum(1 for s in samples if s[1] != "E2E")
    out["failures_total"] = sum(not s[4] for s in samples)
    out["results_per_s"] = round(sum(out[s]["results_per_s"] for s in SCENARIOS), 2)
    out["inference_results_per_s"] = out["cache_miss"]["results_per_s"]
    queue = _load_queue(outdir)
    out["queue_depth_max"] = max((q for _, q in queue), default=None)
    cpu_file = outdir / "cpu.json"
    if cpu_file.exists():
        # CPU per result: every part's CPU seconds over the run, by the results it delivered.
        cpu = json.loads(cpu_file.read_text())
        results = sum(len([s for s in samples if s[1] == "E2E" and s[2] == sc and s[4]]) for sc in SCENARIOS)
        out["cpu_seconds"] = cpu
        out["cpu_ms_per_result"] = round(sum(cpu.values()) * 1000 / max(results, 1), 1)
        out["server_cpu_ms_per_result"] = round(
            sum(v for k, v in cpu.items() if k != "locust") * 1000 / max(results, 1), 1
        )
        out["requests_per_s"] = round(out["requests_total"] / duration, 2)
    if step_seconds:
        out["steps"] = _steps(samples, t0, step_seconds, step_start, step_users)
        over = [s for s in out["steps"] if s["cache_miss_p95_ms"] and s["cache_miss_p95_ms"] > KNEE_P95_MS]
        out["knee_users"] = over[0]["users"] if over else None
    return out


def _steps(samples, t0: float, step_seconds: int, start: int, step: int) -> list[dict]:
    steps: dict[int, list] = {}
    for s in samples:
        if s[1] == "E2E" and s[4]:
            steps.setdefault(int((s[0] - t0) // step_seconds), []).append(s)
    out = []
    for i in sorted(steps):
        miss = [s[3] for s in steps[i] if s[2] == "cache_miss"]
        hit = [s[3] for s in steps[i] if s[2] == "cache_hit"]
        out.append(
            {
                "users": start + i * step,
                "cache_miss_p50_ms": pct(miss, 50),
                "cache_miss_p95_ms": pct(miss, 95),
                "cache_hit_p95_ms": pct(hit, 95),
                "results_per_s": round(len(steps[i]) / step_seconds, 2),
                # Results that needed inference: what is compared with the engine's throughput.
                "inference_results_per_s": round(len(miss) / step_seconds, 2),
            }
        )
    return out


def _load_queue(outdir: Path) -> list[tuple[float, float]]:
    path = outdir / "queue.csv"
    if not path.exists():
        return []
    with open(path) as fh:
        return [(float(r["t"]), float(r["queue_depth"])) for r in csv.DictReader(fh) if r["queue_depth"]]


def one_line(s: dict) -> str:
    m, h = s["cache_miss"]["e2e_ms"], s["cache_hit"]["e2e_ms"]
    knee = f" knee={s.get('knee_users')} users" if "steps" in s else ""
    return (
        f"  {s['config']}/{s['label']}: miss p50/p95 {m['p50']}/{m['p95']} ms, hit p50/p95 {h['p50']}/{h['p95']} ms, "
        f"{s['results_per_s']} results/s, failures {s['failures_total']}{knee}"
    )


def plot_run(outdir: Path, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = load_samples(outdir)
    if not samples:
        return
    t0 = min(x[0] for x in samples)
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for scenario, color in (("cache_miss", "tab:red"), ("cache_hit", "tab:blue")):
        pts = [(x[0] - t0, x[3]) for x in samples if x[1] == "E2E" and x[2] == scenario and x[4]]
        if not pts:
            continue
        t = np.array([p[0] for p in pts])
        v = np.array([p[1] for p in pts])
        edges = np.arange(0, t.max() + 10, 10)
        mids, p50, p95 = [], [], []
        for a in edges:
            w = v[(t >= a) & (t < a + 10)]
            if len(w):
                mids.append(a + 5)
                p50.append(np.percentile(w, 50))
                p95.append(np.percentile(w, 95))
        axes[0].plot(mids, p50, color=color, label=f"{scenario} p50")
        axes[0].plot(mids, p95, color=color, linestyle="--", label=f"{scenario} p95")
        counts, _ = np.histogram(t, bins=edges)
        axes[1].plot(edges[:-1] + 5, counts / 10, color=color, label=scenario)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("end-to-end ms (10 s windows)")
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("results / s")
    axes[1].legend(fontsize=8)
    queue = _load_queue(outdir)
    if queue:
        axes[2].plot([q[0] - t0 for q in queue], [q[1] for q in queue], color="tab:gray")
    axes[2].set_ylabel("queued jobs")
    axes[2].set_xlabel("seconds")
    fig.suptitle(f"{s['config']} / {s['label']}")
    fig.tight_layout()
    fig.savefig(outdir / "timeline.png", dpi=90)
    plt.close(fig)


def plot_comparison(outroot: Path, summaries: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = [s for s in summaries if s["users"]]
    if not fixed:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{s['config']}\n{s['users']} users" for s in fixed]
    x = np.arange(len(fixed))
    ax.bar(x - 0.2, [s["cache_miss"]["e2e_ms"]["p50"] or 0 for s in fixed], 0.4, label="cache miss p50")
    ax.bar(x + 0.2, [s["cache_miss"]["e2e_ms"]["p95"] or 0 for s in fixed], 0.4, label="cache miss p95")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("end-to-end ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(outroot / "comparison.png", dpi=90)
    plt.close(fig)


def markdown(summaries: list[dict]) -> str:
    lines = [
        "| configuration | users | miss p50 / p95 / p99 (ms) | hit p50 / p95 / p99 (ms) | upload p50 / p95 (ms) | results/s (inference) | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for users, seed in SEED.items():
        m, h = seed["cache_miss"], seed["cache_hit"]
        lines.append(
            f"| reference system (t3.large, published) | {users} | {m[0]:,} / {m[1]:,} / - | {h[0]} / {h[1]} / - | - | - | 0% |"
        )
    for s in summaries:
        if not s["users"]:
            continue
        m, h = s["cache_miss"]["e2e_ms"], s["cache_hit"]["e2e_ms"]
        u = s["cache_miss"]["upload_ms"]
        lines.append(
            f"| {s['config']} (this machine) | {s['users']} | {m['p50']} / {m['p95']} / {m['p99']} | "
            f"{h['p50']} / {h['p95']} / {h['p99']} | {u['p50']} / {u['p95']} | "
            f"{s['results_per_s']} ({s['inference_results_per_s']}) | {s['failures_total']} of {s['requests_total']} |"
        )
    with_cpu = [s for s in summaries if s.get("cpu_seconds")]
    if with_cpu:
        lines += [
            "",
            "CPU per result: CPU seconds of every part during the run over the results delivered (database "
            "and broker: all of the machine's PostgreSQL and Redis processes).",
            "",
            "| configuration | users | requests/s | results/s | CPU ms per result (servers only) | CPU s: web / worker / database / broker / locust |",
            "|---|---|---|---|---|---|",
        ]
        for s in with_cpu:
            c = s["cpu_seconds"]
            parts = " / ".join(str(c.get(k, 0)) for k in ("web", "worker", "database", "broker", "locust"))
            lines.append(
                f"| {s['config']} | {s['users'] or 'step'} | {s['requests_per_s']} | {s['results_per_s']} | "
                f"{s['cpu_ms_per_result']} ({s['server_cpu_ms_per_result']}) | {parts} |"
            )
    for s in summaries:
        if "steps" in s:
            lines += [
                "",
                f"Step test, {s['config']}: knee (cache-miss p95 > {KNEE_P95_MS} ms) at "
                f"{s.get('knee_users') or 'none reached'} users",
                "",
                "| users | miss p50 (ms) | miss p95 (ms) | hit p95 (ms) | results/s | inference results/s |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {st['users']} | {st['cache_miss_p50_ms']} | {st['cache_miss_p95_ms']} | "
                f"{st['cache_hit_p95_ms']} | {st['results_per_s']} | {st.get('inference_results_per_s', '')} |"
                for st in s["steps"]
            ]
    return "\n".join(lines) + "\n"
