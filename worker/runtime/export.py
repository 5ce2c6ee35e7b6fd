"""ONNX export of the model, done once per weights file and cached on disk.

The files are keyed by the sha256 of the weights they come from, so new
weights never meet an old export. Three graphs, each ending before
torchxrayvision's op_norm (which runs in numpy, worker/runtime/backends.py):

  logits  the whole network up to the classifier's logits (fp32 backends)
  stem    conv0 -> norm0 -> relu0 -> pool0                (fp32 part of bf16)
  body    denseblock1 ... denseblock4, before norm5        (bf16 part)

An export is checked against torch before it is published: ONNX Runtime runs
it on a probe batch and every output must match torch's to 1e-4 (relative to
the output's scale). Then it is written to a temporary file and renamed into place (atomic), under
an exclusive lock, so concurrent workers export once and never read half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from worker.runtime.backends import Logits, body_module, stem_module

logger = logging.getLogger(__name__)

# Bumped whenever the exported graphs change (parts, opset, exporter settings).
EXPORT_RECIPE = "onnx1"
OPSET = 17
PARTS = ("logits", "stem", "body")
PARITY_RTOL = 1e-4


class ExportError(RuntimeError):
    pass


def export_dir(cache_dir: Path, weights_sha256: str) -> Path:
    return Path(cache_dir) / "onnx" / f"{weights_sha256[:32]}-{EXPORT_RECIPE}"


def onnx_files(cache_dir: Path, weights_sha256: str) -> dict[str, Path]:
    root = export_dir(cache_dir, weights_sha256)
    return {part: root / f"{part}.onnx" for part in PARTS}


def _module(model: torch.nn.Module, part: str) -> torch.nn.Module:
    if part == "logits":
        return Logits(model).eval()
    if part == "stem":
        return stem_module(model).eval()
    return body_module(model).eval()


def ramp_probe() -> torch.Tensor:
    """A smooth, X-ray-like ramp on [-1024, 1024], batch of 2 (the batch axis is dynamic)."""
    ramp = torch.linspace(-1024, 1024, 224)
    return torch.stack(
        [ramp[None, :, None] * ramp[None, None, :] / 1024, ramp[None, :, None].expand(1, 224, 224)]
    )


def _probe(model: torch.nn.Module, part: str) -> torch.Tensor:
    x = ramp_probe()
    if part == "body":
        with torch.no_grad():
            return stem_module(model).eval()(x)
    return x


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One exporter at a time in this folder, across processes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _export_one(model: torch.nn.Module, part: str, target: Path) -> None:
    write_onnx(_module(model, part), _probe(model, part), target, label=part)


def write_onnx(module: torch.nn.Module, probe: torch.Tensor, target: Path, *, label: str) -> None:
    """Export `module` to `target` (x -> y, dynamic batch), refused unless ONNX Runtime gives what
    torch gives on `probe`; written to a temporary file, synced and renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: the dynamo one needs onnxscript and gives the same graph here.
            torch.onnx.export(
                module,
                (probe,),
                tmp,
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                opset_version=OPSET,
            )
        _check_parity(module, probe, Path(tmp), label)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_parity(module: torch.nn.Module, probe: torch.Tensor, path: Path, part: str) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": probe.numpy()})
    with torch.no_grad():
        want = module(probe).numpy()
    err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-6))
    if not err <= PARITY_RTOL:
        raise ExportError(f"exported {part} differs from torch by {err:.2e} (relative), refusing it")


def ensure_exported(
    model: torch.nn.Module, *, weights_sha256: str, cache_dir: Path, parts: tuple[str, ...] = PARTS
) -> tuple[dict[str, Path], float]:
    """The ONNX files of these parts for these weights, exporting the missing ones.

    Returns (files, export_ms); export_ms is 0 when everything was cached.
    """
    files = {part: path for part, path in onnx_files(cache_dir, weights_sha256).items() if part in parts}
    if all(p.is_file() for p in files.values()):
        return files, 0.0
    started = time.perf_counter()
    root = export_dir(cache_dir, weights_sha256)
    with locked(root):
        for part, path in files.items():
            if not path.is_file():  # another worker may have exported it while we waited
                _export_one(model, part, path)
    export_ms = (time.perf_counter() - started) * 1000
    logger.info("event=onnx_exported dir=%s parts=%s export_ms=%.0f", root, ",".join(files), export_ms)
    return files, export_ms


def discard(cache_dir: Path, weights_sha256: str) -> None:
    """Remove a cached export that failed to load, so the next start exports it again."""
    for path in onnx_files(cache_dir, weights_sha256).values():
        path.unlink(missing_ok=True)
