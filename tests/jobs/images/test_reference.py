"""What the model sees, per sample, against torchxrayvision's reference pipeline.

Ours: the upload goes through intake (validated, de-identified, stored) and the
worker's preprocess runs on the stored bytes, as in production.
Reference, on the original upload: xrv.utils.read_xray_dcm for DICOM (its
defaults), skimage.io.imread + xrv.datasets.normalize (+ mean over colour) for
PNG/JPEG; then XRayCenterCrop and XRayResizer(224).

The bounds leave room for a faster crop/resize and no room for a
wrong image: a control pair of two different radiographs differs by far more.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from backend.jobs import images
from tests.factories import PNG_JPEG_SAMPLES, sample_bytes
from tests.jobs.images import factories as f
from worker.runtime.preprocess import preprocess

# Model input is in [-1024, 1024].
MAX_ABS_INPUT = 64.0
MEAN_ABS_INPUT = 4.0
MAX_ABS_PROBABILITY = 0.02

GENERATED = {
    "jpeg2000_12bit.dcm": lambda: f.jpeg2000_dicom(),
    "jpeg_lossless_12bit.dcm": f.jpeg_lossless_dicom,
    "uncompressed_explicit.dcm": lambda: f.uncompressed_dicom(),
    "inverted_monochrome1.dcm": f.inverted_monochrome1,
    "png16.png": f.png16_bytes,
}
CASES = [*f.DICOM_SAMPLES, *PNG_JPEG_SAMPLES, *GENERATED]


def _bytes(name: str) -> bytes:
    return GENERATED[name]() if name in GENERATED else sample_bytes(name)


def reference_input(data: bytes, path: Path) -> np.ndarray:
    import skimage.io
    import torchxrayvision as xrv

    path.write_bytes(data)
    if data[128:132] == b"DICM":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read_xray_dcm warns when it inverts MONOCHROME1
            img = xrv.utils.read_xray_dcm(str(path))
    else:
        raw = skimage.io.imread(str(path))
        img = xrv.datasets.normalize(raw, 65535 if raw.dtype == np.uint16 else 255)
        if img.ndim == 3:
            img = img[..., :3].mean(2)
    img = xrv.datasets.XRayCenterCrop()(img[None, ...])
    return xrv.datasets.XRayResizer(224)(img)


def platform_input(data: bytes) -> np.ndarray:
    stored = images.accept_image(
        data, max_pixels=50_000_000, min_side=64, dicom_max_header_bytes=4 << 20
    ).stored_bytes
    return preprocess(stored)


@pytest.mark.parametrize("name", CASES)
def test_model_input_and_probabilities_match_the_reference(runtime, tmp_path, name):
    data = _bytes(name)
    ours = platform_input(data)
    reference = reference_input(data, tmp_path / name)
    assert ours.shape == reference.shape == (1, 224, 224)
    diff = np.abs(ours - reference)
    assert diff.max() <= MAX_ABS_INPUT, diff.max()
    assert diff.mean() <= MEAN_ABS_INPUT, diff.mean()
    probs = runtime.predict(np.stack([ours, reference]))
    assert probs.shape == (2, 18)
    assert np.abs(probs[0] - probs[1]).max() <= MAX_ABS_PROBABILITY


def test_control_two_different_images_differ_far_more_than_the_bounds(runtime):
    dicom_input = platform_input(sample_bytes(f.MONO2_SAMPLE))
    png_input = platform_input(sample_bytes("00000001_000.png"))
    diff = np.abs(dicom_input - png_input)
    assert diff.mean() > 20 * MEAN_ABS_INPUT
    assert diff.max() > 10 * MAX_ABS_INPUT
    probs = runtime.predict(np.stack([dicom_input, png_input]))
    assert np.abs(probs[0] - probs[1]).max() > 5 * MAX_ABS_PROBABILITY


def test_monochrome1_made_by_inverting_pixels_gives_the_same_probabilities(runtime):
    mono2 = platform_input(sample_bytes(f.MONO2_SAMPLE))
    mono1 = platform_input(f.inverted_monochrome1())
    probs = runtime.predict(np.stack([mono2, mono1]))
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)
    # ... while the relabelled-only file (Fake_MONOHR1) is the negative image, so it differs.
    negative = platform_input(sample_bytes(f.MONO1_SAMPLE))
    np.testing.assert_allclose(negative, -mono2, atol=1e-2)
    assert np.abs(runtime.predict(negative[None])[0] - probs[0]).max() > 1e-2
