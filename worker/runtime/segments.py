"""Contiguous slices of the DenseNet's feature extractor exported to ONNX, for mixed-precision runs.

Reduced precision is not equally harmful everywhere in the network (worker/runtime/backends.py):
a mixed bf16 backend runs some slices in bf16 and others in fp32, which needs the network cut at
the boundaries the split chooses. worker/runtime/export.py exports the three fixed parts (logits,
stem, body); this module exports any run of consecutive `features` children (`conv0` ...
`denseblock4`), named by its first and last child, cached on disk by the weights' sha256 like
export.py's files, checked against torch before use, written atomically under a lock (export.py's write_onnx and
locked).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from worker.runtime.backends import BODY, STEM, _features
from worker.runtime.export import locked, ramp_probe, write_onnx

logger = logging.getLogger(__name__)

# Bumped whenever the exported slices change (opset, exporter settings).
SEGMENT_RECIPE = "seg1"
FEATURES = STEM + BODY  # conv0 ... denseblock4; norm5 and the classifier run in numpy (backends.Head)


def split(fp32_parts: frozenset[str] | set[str]) -> list[tuple[tuple[str, ...], bool]]:
    """FEATURES cut into runs of the same precision: [(names, runs_in_fp32), ...]."""
    unknown = set(fp32_parts) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown feature parts {sorted(unknown)}; choose among {FEATURES}")
    runs: list[tuple[list[str], bool]] = []
    for name in FEATURES:
        fp32 = name in fp32_parts
        if runs and runs[-1][1] == fp32:
            runs[-1][0].append(name)
        else:
            runs.append(([name], fp32))
    return [(tuple(names), fp32) for names, fp32 in runs]


def segment_dir(cache_dir: Path, weights_sha256: str) -> Path:
    return Path(cache_dir) / "onnx" / f"{weights_sha256[:32]}-{SEGMENT_RECIPE}"


def segment_path(cache_dir: Path, weights_sha256: str, names: tuple[str, ...]) -> Path:
    return segment_dir(cache_dir, weights_sha256) / f"{names[0]}-{names[-1]}.onnx"


def _probe(model: torch.nn.Module, names: tuple[str, ...]) -> torch.Tensor:
    """export.py's ramp run through the features before `names`."""
    x = ramp_probe()
    before = FEATURES[: FEATURES.index(names[0])]
    if before:
        with torch.no_grad():
            x = _features(model, before).eval()(x)
    return x


def _export(model: torch.nn.Module, names: tuple[str, ...], target: Path) -> None:
    write_onnx(_features(model, names).eval(), _probe(model, names), target, label=f"{names[0]}..{names[-1]}")


def ensure_segments(
    model: torch.nn.Module, *, weights_sha256: str, cache_dir: Path, runs: list[tuple[str, ...]]
) -> tuple[list[Path], float]:
    """The ONNX file of each run of feature children, exporting the missing ones: (files, export_ms)."""
    files = [segment_path(cache_dir, weights_sha256, names) for names in runs]
    if all(p.is_file() for p in files):
        return files, 0.0
    started = time.perf_counter()
    with locked(segment_dir(cache_dir, weights_sha256)):
        for names, path in zip(runs, files, strict=True):
            if not path.is_file():  # another worker may have exported it while we waited
                _export(model, names, path)
    export_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "event=segments_exported runs=%s export_ms=%.0f", [f"{r[0]}-{r[-1]}" for r in runs], export_ms
    )
    return files, export_ms
