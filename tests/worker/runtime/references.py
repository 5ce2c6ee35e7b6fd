"""torchxrayvision's own pipeline and model, computed in the tests as the reference to compare with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.io
import torch
import torchvision
import torchxrayvision as xrv

from backend.jobs.model_identity import MODEL_NAME


def reference_input(path: Path) -> np.ndarray:
    """torchxrayvision's README pipeline, verbatim."""
    img = skimage.io.imread(path)
    img = xrv.datasets.normalize(img, 255)
    if img.ndim == 3:
        img = img.mean(2)
    img = img[None, ...]
    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)])
    return transform(img)


def reference_model(state_path: Path) -> torch.nn.Module:
    meta = xrv.models.model_urls[MODEL_NAME]
    model = xrv.models.DenseNet(num_classes=18, op_threshs=torch.tensor(meta["op_threshs"]))
    model.load_state_dict(torch.load(state_path, weights_only=True))
    return model.eval()
