"""int8 for fast mode: post-training quantization (NNCF) with the layers that matter kept fp32.

Plain int8 (every convolution and the classifier quantized, calibrated on the sample X-rays) is
fast and, on the fallback model, wrong: it moves probabilities by ~0.2 where two different X-rays
differ by ~0.3 (docs/performance.md). So int8 is mixed with fp32, chosen by measured sensitivity:

1. the whole network in int8: kept as is when max |dprob| (against the fp32 pipeline, on the
   calibration images and their mirror images) is within `max_drop`;
2. otherwise each group of layers (conv0, each dense block and transition, the classifier) is
   quantized alone, which measures how much its rounding moves the probabilities;
3. and groups are put in int8 least sensitive first, each kept only while the whole stays within
   `max_drop`; the rest stay fp32 (NNCF's ignored scope). A mix whose int8 groups hold less than
   MIN_INT8_SHARE of the network's work is not chosen: it would be fp32 under another name.

At most 1 + 2 x 9 quantizations, and no new step starts after `budget_seconds`. NNCF's own
`quantize_with_accuracy_control` does this layer by layer (187 quantized operations here): its
ranking alone ran for minutes on a 2-core machine, too long for a worker's first start. The guard
(worker/runtime/guard.py) then measures the result like any other fast precision; when no group
fits, the plain int8 model is kept on disk so that its speed and error are still reported.

The result is written once, as an OpenVINO IR, under MODEL_CACHE_DIR/int8/<key>/, keyed by the
weights' sha256, this recipe (with NNCF's and OpenVINO's versions, max_drop, budget), the
calibration inputs and the CPU signature (the measurements run on this CPU's int8 kernels: VNNI
and AVX2 round differently). Written to a temporary directory and renamed into place, under a
lock, so concurrent workers quantize once and a restart never quantizes again.
The search runs in a child process (`python -m worker.runtime.quantize`): NNCF's memory goes back
when it ends (a worker's RSS peaked at 1.9 GB quantizing in-process), and a child that outruns
its budget by CHILD_GRACE_SECONDS is stopped: int8 is then refused with that reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from worker.runtime.backends import probabilities

logger = logging.getLogger(__name__)

INT8_RECIPE = "int8-mixed3"
# The layer groups, in network order, and their share of the network's multiply-adds (ties in
# sensitivity go to the group that saves more).
GROUPS = (
    "conv0",
    "denseblock1",
    "transition1",
    "denseblock2",
    "transition2",
    "denseblock3",
    "transition3",
    "denseblock4",
    "classifier",
)
GROUP_WEIGHT = {
    "conv0": 0.04,
    "denseblock1": 0.24,
    "transition1": 0.04,
    "denseblock2": 0.25,
    "transition2": 0.04,
    "denseblock3": 0.32,
    "transition3": 0.02,
    "denseblock4": 0.05,
    "classifier": 0.0,
}
# A mix whose int8 groups hold less of the network's work than this is not an int8 model (on the
# fallback model only the classifier fits: OpenVINO fp32 under another name), so it is not chosen.
MIN_INT8_SHARE = 0.25
# How long past its budget the quantizing child may run (imports, the step under way) before it is stopped.
CHILD_GRACE_SECONDS = 180.0


class QuantizeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Quantized:
    path: Path  # model.xml (model.bin beside it)
    key: str
    cached: bool
    seconds: float  # quantization time (that of the run that wrote the cache when cached)
    validation_max_abs_diff: float | None  # max |dprob| on the calibration set (exact preprocessing)
    int8_groups: tuple[str, ...]  # the layer groups in int8; the others run fp32

    def as_dict(self) -> dict:
        return asdict(self) | {"path": str(self.path)}


def cache_key(
    *,
    weights_sha256: str,
    inputs: np.ndarray,
    cpu_key: str,
    max_drop: float,
    budget_seconds: float,
) -> str:
    from importlib.metadata import PackageNotFoundError, version

    import openvino as ov

    try:
        nncf_version = version("nncf")  # not imported: a cached model must not cost NNCF's import
    except PackageNotFoundError:
        nncf_version = "not installed"
    recipe = {
        "recipe": INT8_RECIPE,
        "weights_sha256": weights_sha256,
        "calibration": hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.float32).tobytes()).hexdigest(),
        "cpu": cpu_key,
        "max_drop": round(float(max_drop), 6),
        "budget_seconds": round(float(budget_seconds), 1),
        "nncf": nncf_version,
        "openvino": ov.__version__,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def cache_dir_for(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "int8" / f"{key[:32]}-{INT8_RECIPE}"


def _cached(root: Path, key: str) -> Quantized | None:
    meta_path = root / "meta.json"
    if not (meta_path.is_file() and (root / "model.xml").is_file() and (root / "model.bin").is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return None
    if meta.get("key") != key:
        return None
    return Quantized(
        path=root / "model.xml",
        key=key,
        cached=True,
        seconds=meta.get("seconds", 0.0),
        validation_max_abs_diff=meta.get("validation_max_abs_diff"),
        int8_groups=tuple(meta.get("int8_groups") or ()),
    )


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_int8(
    *,
    logits_onnx: Path,
    op_threshs: np.ndarray,
    inputs: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    weights_sha256: str,
    cache_dir: Path,
    cpu_key: str,
    max_drop: float,
    budget_seconds: float,
) -> Quantized:
    """The accuracy-controlled int8 model of these weights, quantizing it on first need.

    inputs: (N, 1, 224, 224) exactly preprocessed calibration images (also the validation set);
    reference: the fp32 pipeline's predict (probabilities), what the metric compares with.
    """
    key = cache_key(
        weights_sha256=weights_sha256,
        inputs=inputs,
        cpu_key=cpu_key,
        max_drop=max_drop,
        budget_seconds=budget_seconds,
    )
    root = cache_dir_for(cache_dir, key)
    found = _cached(root, key)
    if found is not None:
        return found
    with _locked(root.parent / f".{root.name}.lock"):
        found = _cached(root, key)  # another worker may have quantized while we waited
        if found is not None:
            return found
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        want = np.concatenate([reference(x[i : i + 8]) for i in range(0, len(x), 8)])
        _quantize_in_child(
            logits_onnx=logits_onnx,
            op_threshs=op_threshs,
            inputs=x,
            want=want,
            root=root,
            key=key,
            max_drop=max_drop,
            budget_seconds=budget_seconds,
        )
        found = _cached(root, key)
        if found is None:
            raise QuantizeError(f"quantization wrote no usable model in {root}")
        logger.info(
            "event=int8_quantized dir=%s seconds=%.1f validation_max_abs_diff=%s int8_groups=%s max_drop=%s",
            root,
            found.seconds,
            found.validation_max_abs_diff,
            ",".join(found.int8_groups) or "-",
            max_drop,
        )
        return dataclasses.replace(found, cached=False)


def _quantize_in_child(
    *,
    logits_onnx: Path,
    op_threshs: np.ndarray,
    inputs: np.ndarray,
    want: np.ndarray,
    root: Path,
    key: str,
    max_drop: float,
    budget_seconds: float,
) -> None:
    """Quantize in a child process: NNCF's memory (its peak is ~0.6 GB over a worker's) goes back
    when it ends, and a run past budget_seconds + CHILD_GRACE_SECONDS is killed. A plain
    subprocess, since Celery's pool processes may not fork multiprocessing children."""
    root.parent.mkdir(parents=True, exist_ok=True)
    job = root.parent / f".{root.name}-job.npz"
    np.savez(job, inputs=inputs, want=want, op_threshs=op_threshs)
    args = {
        "logits_onnx": str(logits_onnx),
        "job": str(job),
        "root": str(root),
        "key": key,
        "max_drop": max_drop,
        "budget_seconds": budget_seconds,
    }
    try:
        out = subprocess.run(
            [sys.executable, "-m", "worker.runtime.quantize", json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=budget_seconds + CHILD_GRACE_SECONDS,
            check=False,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
    except subprocess.TimeoutExpired as exc:
        raise QuantizeError(
            f"quantization ran past {budget_seconds + CHILD_GRACE_SECONDS:.0f} s and was stopped"
        ) from exc
    finally:
        job.unlink(missing_ok=True)
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        raise QuantizeError(f"quantization failed: {lines[-1] if lines else f'exit {out.returncode}'}")


def _quantize(
    *,
    logits_onnx: Path,
    op_threshs: np.ndarray,
    inputs: np.ndarray,
    want: np.ndarray,
    root: Path,
    key: str,
    max_drop: float,
    budget_seconds: float,
) -> None:
    """The search itself (module docstring), run in the child: writes root/{model.xml,model.bin,meta.json}."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise QuantizeError(f"nncf is not installed ({exc})") from exc

    started = time.perf_counter()
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    want = want.astype(np.float64)
    dataset = nncf.Dataset([x[i : i + 8] for i in range(0, len(x), 8)])
    core = ov.Core()
    nncf.set_log_level(logging.ERROR)
    trials: list[dict] = []

    def attempt(selected: tuple[str, ...]):
        """Quantize only these groups; (model, max |dprob| on the calibration set)."""
        ignored = [g for g in GROUPS if g not in selected]
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: not in a worker's log
            model = nncf.quantize(
                core.read_model(str(logits_onnx)),
                dataset,
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(x),
                ignored_scope=nncf.IgnoredScope(patterns=[_pattern(g) for g in ignored], validate=False)
                if ignored
                else None,
            )
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = np.concatenate(
            [probabilities(np.asarray(compiled(x[i : i + 8])[0]), op_threshs) for i in range(0, len(x), 8)]
        )
        diff = float(np.abs(got.astype(np.float64) - want).max())
        trials.append({"int8": list(selected), "max_abs_diff": round(diff, 5)})
        return model, diff

    def over_budget() -> bool:
        return time.perf_counter() - started > budget_seconds

    # 1. Everything in int8 (plain post-training quantization): kept as is when close enough.
    full, full_diff = attempt(GROUPS)
    chosen, chosen_groups, chosen_diff = full, GROUPS, full_diff
    if full_diff > max_drop:
        # 2. Each group alone in int8: its sensitivity (the groups that would save most first, so
        # that a budget cut leaves out the least useful ones).
        alone: dict[str, float] = {}
        fits: dict[str, object] = {}  # the groups within max_drop alone, and their model
        for group in sorted(GROUPS, key=lambda g: -GROUP_WEIGHT[g]):
            if over_budget():
                break
            model, alone[group] = attempt((group,))
            if alone[group] <= max_drop:
                fits[group] = model
        # 3. Least sensitive first, add groups while the whole stays within max_drop; not tried
        # when even all the groups that fit alone hold too little of the work to be worth it.
        selected: tuple[str, ...] = ()
        best = None
        if sum(GROUP_WEIGHT[g] for g in fits) >= MIN_INT8_SHARE:
            for group in sorted(fits, key=lambda g: (alone[g], -GROUP_WEIGHT[g])):
                if over_budget():
                    break
                model, diff = (fits[group], alone[group]) if not selected else attempt((*selected, group))
                if diff <= max_drop:
                    selected, best = (*selected, group), (model, diff)
        del fits
        if best is not None and sum(GROUP_WEIGHT[g] for g in selected) >= MIN_INT8_SHARE:
            chosen, chosen_groups, chosen_diff = best[0], selected, best[1]
        # else: no mix worth running is within max_drop; the plain int8 model is kept for the
        # record (the guard refuses it, and its speed and error are still reported).
    seconds = round(time.perf_counter() - started, 1)
    meta = {
        "key": key,
        "recipe": INT8_RECIPE,
        "seconds": seconds,
        "validation_max_abs_diff": round(chosen_diff, 6),
        "int8_groups": list(chosen_groups),
        "fp32_groups": [g for g in GROUPS if g not in chosen_groups],
        "reached_max_drop": chosen_diff <= max_drop,
        "max_drop": max_drop,
        "budget_seconds": budget_seconds,
        "over_budget": over_budget(),
        "images": len(x),
        "trials": trials,
    }
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        ov.save_model(chosen, str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)  # an incomplete earlier attempt
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    job = np.load(args["job"])
    _quantize(
        logits_onnx=Path(args["logits_onnx"]),
        op_threshs=job["op_threshs"],
        inputs=job["inputs"],
        want=job["want"],
        root=Path(args["root"]),
        key=args["key"],
        max_drop=float(args["max_drop"]),
        budget_seconds=float(args["budget_seconds"]),
    )


def _pattern(group: str) -> str:
    return f".*/{group}/.*"


if __name__ == "__main__":
    _main(sys.argv[1:])
