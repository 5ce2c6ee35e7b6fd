"""Which model a job is for: the version string that keys the result cache.

Both processes need it: the web to build the dedup key (sha256 of the upload,
model version), the worker to claim only jobs it can run. It is computed from
settings alone (no file is looked at), so a web process and a worker started
with the same environment always agree; the worker then checks that the weights
it loads are the ones the version names (worker/runtime/weights.py).

The version changes whenever anything that changes the output does: the
weights (their sha256, or the fallback recipe), the preprocessing, the DICOM
VOI LUT option, and fast mode.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

MODEL_NAME = "densenet121-res224-all"
# The file name torchxrayvision downloads to its cache for this model.
OFFICIAL_WEIGHTS_FILENAME = (
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
)
# The model's outputs, in its order (torchxrayvision's model_urls[MODEL_NAME]["labels"];
# the runtime tests check that the loaded model says the same).
LABELS = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)
# Bumped whenever the preprocessing changes what the model sees.
PREPROCESS_VERSION = "pp3"
# Bumped whenever the fallback recipe (worker/runtime/fallback.py) changes.
FALLBACK_RECIPE_VERSION = "fb1"
UNTRAINED = "untrained"


@dataclass(frozen=True)
class ModelIdentity:
    weights_sha256: str  # the configured sha256 of the official weights, or UNTRAINED
    voi_lut: bool
    fast: bool

    def replace(self, **changes: object) -> ModelIdentity:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def official(self) -> bool:
        return self.weights_sha256 != UNTRAINED

    @property
    def version(self) -> str:
        weights_id = self.weights_sha256[:16] if self.official else f"{UNTRAINED}-{FALLBACK_RECIPE_VERSION}"
        # CXRQ_DICOM_APPLY_VOI_LUT changes what the model sees for DICOM (docs/intake.md).
        voi_lut = "+voilut" if self.voi_lut else ""
        # Fast mode's results may differ from fp32's by up to FAST_MAX_ABS_DIFF: never share
        # a cache with them. (A worker whose guard refused fast mode still claims these jobs
        # and says so in each result's provenance.)
        fast = "+fast" if self.fast else ""
        return f"{MODEL_NAME}@{weights_id}+{PREPROCESS_VERSION}{voi_lut}{fast}"


@functools.cache
def _identity(weights_sha256: str, voi_lut: bool, fast: bool) -> ModelIdentity:
    return ModelIdentity(weights_sha256=weights_sha256 or UNTRAINED, voi_lut=voi_lut, fast=fast)


def current_identity() -> ModelIdentity:
    """The identity the settings name; built once per configuration, then a dictionary look-up."""
    return _identity(
        settings.MODEL_WEIGHTS_SHA256, settings.DICOM_APPLY_VOI_LUT, settings.PRECISION == "fast"
    )


def current_model_version() -> str:
    return current_identity().version


def xrv_cache_path() -> Path:
    """Where torchxrayvision keeps downloaded weights (its utils.get_cache_dir(), without importing it)."""
    return Path(os.path.expanduser("~/.torchxrayvision/models_data")) / OFFICIAL_WEIGHTS_FILENAME
