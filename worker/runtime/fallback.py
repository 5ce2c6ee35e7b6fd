"""The deterministic, non-degenerate fallback model (dev and test only).

A randomly initialised DenseNet121 saturates: every probability is 0 or 1 on
every X-ray, so a numerical test against it proves nothing. This recipe gives
outputs that vary like a real model's:

1. fixed seed, torchxrayvision's DenseNet121 with the real model's labels and op_threshs;
2. BatchNorm running statistics recomputed on the calibration X-rays;
3. the classifier rescaled so each label's logit has mean 0 and std 0.5 over them.

The result is saved once as a weights file (state dict, loaded with
weights_only=True) whose sha256 identifies it; every result it produces says
`weights: "untrained"`. Changing the recipe means bumping FALLBACK_RECIPE_VERSION.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from backend.jobs.model_identity import FALLBACK_RECIPE_VERSION, PREPROCESS_VERSION
from worker.runtime import preprocess
from worker.runtime.weights import file_sha256, new_densenet

logger = logging.getLogger(__name__)

SEED = 1234
LOGIT_STD = 0.5
CALIBRATION_SUFFIXES = (".png", ".jpg", ".jpeg")


def calibration_batch(calibration_dir: Path) -> torch.Tensor:
    files = sorted(p for p in calibration_dir.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES)
    if len(files) < 4:
        raise RuntimeError(f"fallback model needs >= 4 calibration images in {calibration_dir}")
    arrays = [preprocess.preprocess(p.read_bytes()) for p in files]
    # Horizontal flips double the set: BatchNorm statistics from 9 images are noisy.
    arrays += [a[:, :, ::-1].copy() for a in arrays]
    return torch.from_numpy(np.stack(arrays))


def build(calibration_dir: Path) -> torch.nn.Module:
    # One thread: the BatchNorm statistics are sums whose last bits depend on how a reduction is
    # split across threads, so a build in a process that set another thread count (a worker, a
    # tune) gave another file (the suite's full run caught it).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(calibration_dir)
    finally:
        torch.set_num_threads(threads)


def _build(calibration_dir: Path) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = new_densenet()
    x = calibration_batch(calibration_dir)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average: exactly the calibration statistics
        model.train()
        model.features2(x)
        model.eval()
        logits = model.classifier(model.features2(x))
        mean, std = logits.mean(0), logits.std(0).clamp_min(1e-6)
        scale = LOGIT_STD / std
        model.classifier.weight.mul_(scale[:, None])
        model.classifier.bias.copy_((model.classifier.bias - mean) * scale)
    return model.eval()


def cached_path(cache_dir: Path) -> Path:
    # BatchNorm statistics come through preprocess(): a new preprocessing, a new file.
    return cache_dir / f"fallback-densenet121-{FALLBACK_RECIPE_VERSION}-{PREPROCESS_VERSION}-seed{SEED}.pt"


def load_or_build(*, cache_dir: Path, calibration_dir: Path) -> tuple[torch.nn.Module, str]:
    """The fallback model and the sha256 of its weights file, built on first use."""
    path = cached_path(cache_dir)
    if not path.is_file():
        logger.info("event=fallback_build path=%s calibration_dir=%s", path, calibration_dir)
        model = build(calibration_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        os.close(fd)
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    model = new_densenet()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), file_sha256(path)
