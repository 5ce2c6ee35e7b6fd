"""Which model a job is for, computed without importing torch.

The web process needs the model version to build the dedup key
(sha256 of the upload, model version); the worker needs it to claim only
jobs it can run. Both call `current_model_version()`.

The version string changes whenever anything that changes the output does:
the weights (their sha256, or the fallback recipe), and the preprocessing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

MODEL_NAME = "densenet121-res224-all"
# The file name torchxrayvision downloads to its cache for this model.
OFFICIAL_WEIGHTS_FILENAME = (
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
)
# Bumped whenever the preprocessing changes what the model sees.
PREPROCESS_VERSION = "pp3"
# Bumped whenever the fallback recipe (worker/runtime/fallback.py) changes.
FALLBACK_RECIPE_VERSION = "fb1"
UNTRAINED = "untrained"


@dataclass(frozen=True)
class WeightsSpec:
    """Where the official weights are expected, or None for the fallback."""

    path: Path | None
    sha256: str  # expected sha256, or UNTRAINED for the fallback

    @property
    def is_official(self) -> bool:
        return self.path is not None


def xrv_cache_path() -> Path:
    # torchxrayvision.utils.get_cache_dir(), without importing torchxrayvision.
    return Path(os.path.expanduser("~/.torchxrayvision/models_data")) / OFFICIAL_WEIGHTS_FILENAME


def resolve_weights(*, weights_path: str, expected_sha256: str, allow_fallback: bool) -> WeightsSpec:
    """Decide which weights this deployment runs, from settings alone.

    A configured path must exist and comes with its expected sha256. With no
    path, torchxrayvision's cache is used when the file is there. Otherwise the
    deterministic fallback model runs, which only dev/test allow.
    """
    candidate = Path(weights_path).expanduser() if weights_path else xrv_cache_path()
    if candidate.is_file():
        if not expected_sha256:
            raise ImproperlyConfigured(
                f"model weights found at {candidate} but CXRQ_MODEL_WEIGHTS_SHA256 is not set; "
                "set it to the sha256 of the official file (see docs/operations.md)"
            )
        return WeightsSpec(path=candidate, sha256=expected_sha256.lower())
    if weights_path:
        raise ImproperlyConfigured(f"CXRQ_MODEL_WEIGHTS_PATH={weights_path} does not exist")
    if not allow_fallback:
        raise ImproperlyConfigured(
            "no model weights: install the official densenet121-res224-all weights "
            "(docs/operations.md); the untrained fallback model is refused here"
        )
    return WeightsSpec(path=None, sha256=UNTRAINED)


def require_official_weights(*, weights_path: str, expected_sha256: str) -> WeightsSpec:
    """Production guard: weights must be configured with their checksum."""
    spec = resolve_weights(weights_path=weights_path, expected_sha256=expected_sha256, allow_fallback=False)
    if len(spec.sha256) != 64:
        raise ImproperlyConfigured("CXRQ_MODEL_WEIGHTS_SHA256 must be a 64-hex-digit sha256")
    return spec


def weights_spec_from_settings() -> WeightsSpec:
    from django.conf import settings

    return resolve_weights(
        weights_path=settings.MODEL_WEIGHTS_PATH,
        expected_sha256=settings.MODEL_WEIGHTS_SHA256,
        allow_fallback=settings.MODEL_ALLOW_FALLBACK,
    )


def model_version_for(spec: WeightsSpec) -> str:
    from django.conf import settings

    weights_id = spec.sha256[:16] if spec.is_official else f"{UNTRAINED}-{FALLBACK_RECIPE_VERSION}"
    # CXRQ_DICOM_APPLY_VOI_LUT changes what the model sees for DICOM (docs/intake.md).
    voi_lut = "+voilut" if getattr(settings, "DICOM_APPLY_VOI_LUT", False) else ""
    # Fast mode's results may differ from fp32's by up to FAST_MAX_ABS_DIFF: never share
    # a cache with them. (A worker whose guard refused fast mode still claims these jobs
    # and says so in each result's provenance.)
    fast = "+fast" if getattr(settings, "INFERENCE_PRECISION", "fp32") == "fast" else ""
    return f"{MODEL_NAME}@{weights_id}+{PREPROCESS_VERSION}{voi_lut}{fast}"


def current_model_version() -> str:
    return model_version_for(weights_spec_from_settings())
