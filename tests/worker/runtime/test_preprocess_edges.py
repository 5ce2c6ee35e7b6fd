"""Images the sample set does not cover: all-dark, all-bright, constant, smaller than 224.

scikit-image clips its resize output to the input's value range (widened to the zero
padding when the output reaches it); the exact path must do the same, or the border of
an image with no negative (or no positive) values comes out dim.
"""

from __future__ import annotations

import numpy as np
import pytest
import torchxrayvision as xrv

from worker.runtime import preprocess as p

RNG = np.random.default_rng(7)
NORMALISED = {
    "constant white 128^2": np.full((128, 128), 1024.0, np.float32),
    "all dark 300x260": RNG.uniform(-1024, -300, (300, 260)).astype(np.float32),
    "all bright 700x500": RNG.uniform(200, 1024, (700, 500)).astype(np.float32),
    "mixed 100x150": RNG.uniform(-1024, 1024, (100, 150)).astype(np.float32),
}
RAW = {
    "dark 8-bit": (RNG.integers(0, 90, (400, 300), dtype=np.uint8), 255),
    "bright RGB": (RNG.integers(180, 256, (300, 400, 3), dtype=np.uint8), 255),
    "bright 16-bit": (RNG.integers(40000, 65536, (260, 260), dtype=np.uint16), 65535),
}


def reference(img: np.ndarray) -> np.ndarray:
    return xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(img[None]))


@pytest.mark.parametrize("name", NORMALISED)
def test_crop_and_resize_match_skimage_including_its_clip(name):
    img = NORMALISED[name]
    assert np.abs(p.to_model_input(img) - reference(img)).max() <= 1e-3


@pytest.mark.parametrize("name", RAW)
def test_model_input_matches_the_reference_pipeline(name):
    arr, maxval = RAW[name]
    assert (
        np.abs(p.model_input(arr, maxval) - p.reference_model_input(p.normalize(arr, maxval))).max() <= 1e-3
    )


def test_the_clip_matters_for_such_images():
    """Control: without the clip, the border of an all-white image would be far off."""
    img = NORMALISED["constant white 128^2"]
    op, _ = p.resize_operator(128)
    unclipped = (op @ (op @ img).T).T
    assert np.abs(unclipped - reference(img)[0]).max() > 100
