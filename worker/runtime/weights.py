"""Load the official densenet121-res224-all weights, verified before they are unpickled.

torchxrayvision publishes its weights as a pickled nn.Module, which torch can
only load with weights_only=False: unpickling runs code. So the file's sha256
is checked first, against the value the operator configured, and nothing is
unpickled when it does not match.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from worker.model_identity import MODEL_NAME


class WeightsError(RuntimeError):
    pass


def file_sha256(path: Path, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected_sha256: str) -> str:
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise WeightsError(
            f"sha256 mismatch for {path}: expected {expected_sha256}, got {actual}; refusing to load"
        )
    return actual


def new_densenet() -> torch.nn.Module:
    """An empty torchxrayvision DenseNet121 with the labels and op_threshs of MODEL_NAME."""
    import torchxrayvision as xrv

    meta = xrv.models.model_urls[MODEL_NAME]
    model = xrv.models.DenseNet(
        num_classes=len(meta["labels"]), op_threshs=torch.tensor(meta["op_threshs"], dtype=torch.float32)
    )
    model.targets = list(meta["labels"])
    model.pathologies = model.targets
    return model


def load_official(path: Path, expected_sha256: str) -> torch.nn.Module:
    """Same as xrv.models.DenseNet(weights=MODEL_NAME), from a verified local file."""
    verify(path, expected_sha256)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    state = saved.state_dict() if isinstance(saved, torch.nn.Module) else saved
    model = new_densenet()
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k != "op_threshs"}, strict=False
    )
    if unexpected or [k for k in missing if k != "op_threshs"]:
        raise WeightsError(f"weights do not fit DenseNet121: missing={missing} unexpected={unexpected}")
    return model.eval()
