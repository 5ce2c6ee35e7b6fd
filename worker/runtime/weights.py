"""Load the official densenet121-res224-all weights, verified before they are unpickled.

torchxrayvision publishes its weights as a pickled nn.Module, which torch can
only load with weights_only=False: unpickling runs code. So the file's sha256
is checked first, against the value the operator configured, and nothing is
unpickled when it does not match.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from backend.jobs.model_identity import MODEL_NAME, ModelIdentity, xrv_cache_path

logger = logging.getLogger(__name__)


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


def official_weights_path(
    identity: ModelIdentity, *, configured_path: str, allow_fallback: bool
) -> Path | None:
    """The official weights file this identity names, or None to run the untrained fallback.

    The identity (from settings) already decided: a configured sha256 means the
    official weights, which must then be on disk (CXRQ_MODEL_WEIGHTS_PATH, else
    torchxrayvision's cache). Without one, a file found in the cache is not used:
    the web process keys jobs by settings alone, so using it would make the
    worker serve another model version than the one jobs are queued for.
    """
    candidate = Path(configured_path).expanduser() if configured_path else xrv_cache_path()
    if identity.official:
        if not candidate.is_file():
            raise WeightsError(
                f"CXRQ_MODEL_WEIGHTS_SHA256 is set but there is no weights file at {candidate}"
            )
        return candidate
    if not allow_fallback:
        raise WeightsError(
            "no model weights configured (CXRQ_MODEL_WEIGHTS_SHA256): the untrained fallback is refused here"
        )
    if candidate.is_file():
        logger.warning(
            "event=weights_ignored path=%s reason=no_sha256_configured running=untrained "
            "hint='set CXRQ_MODEL_WEIGHTS_SHA256 to the sha256 of the official file to use it'",
            candidate,
        )
    return None


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
