"""The exact preprocessing against torchxrayvision's reference, computed here, on every sample;
the fast-mode JPEG path bounded; controls show the bounds mean something."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.transform
import torch
import torchxrayvision as xrv
from PIL import Image

from tests.factories import DATA, sample_bytes
from worker.runtime import fallback, fast_preprocess
from worker.runtime.decode import decode
from worker.runtime.preprocess import (
    PreprocessError,
    model_input,
    normalize,
    preprocess,
    reference_model_input,
    resize_operator,
    to_model_input,
)

SAMPLES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg", ".dcm"))
PIXEL_BOUND = 0.01  # on the [-1024, 1024] scale: float32 rounding is ~1e-3
PROB_BOUND = 1e-4


def xrv_reference(data: bytes) -> np.ndarray:
    """torchxrayvision's pipeline on the decoded pixels: xrv normalize, mean, crop, resize."""
    arr, maxval = decode(data)
    img = xrv.datasets.normalize(arr, maxval)
    if img.ndim == 3:
        img = img.mean(2)
    img = xrv.datasets.XRayCenterCrop()(img[None, ...])
    return xrv.datasets.XRayResizer(224)(img)


@pytest.fixture(scope="module")
def xrv_model(runtime):
    from django.conf import settings

    from tests.worker.runtime.references import reference_model

    return reference_model(fallback.cached_path(settings.MODEL_CACHE_DIR))


@pytest.fixture(scope="module")
def references(xrv_model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (reference model input, reference probabilities from torchxrayvision's model)."""
    out = {}
    for name in SAMPLES:
        x = xrv_reference(sample_bytes(name))
        with torch.no_grad():
            out[name] = (x, xrv_model(torch.from_numpy(x)[None]).numpy()[0])
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_exact_path_matches_the_reference_on_every_sample(runtime, references, name):
    want_x, want_p = references[name]
    got_x = preprocess(sample_bytes(name))
    assert got_x.shape == (1, 224, 224) and got_x.dtype == np.float32
    assert np.abs(got_x - want_x).max() <= PIXEL_BOUND
    got_p = runtime.predict(got_x[None])[0]
    assert np.abs(got_p - want_p).max() <= PROB_BOUND


def test_control_two_samples_differ_by_far_more_than_the_bounds(references):
    (xa, pa), (xb, pb) = references[SAMPLES[0]], references[SAMPLES[1]]
    assert np.abs(xa - xb).max() > 1000 * PIXEL_BOUND
    assert np.abs(pa - pb).max() > 100 * PROB_BOUND


@pytest.mark.parametrize(
    ("shape", "dtype", "maxval"),
    [
        ((64, 80), np.uint8, 255),  # upsampled: no anti-aliasing
        ((224, 224), np.uint8, 255),  # identity
        ((225, 300), np.uint16, 4095),  # a blur of ~0.002 pixels
        ((513, 700, 3), np.uint8, 255),  # colour, wide: mean over channels, horizontal crop
        ((1001, 999), np.uint16, 65535),  # odd sizes, tall crop
        ((2600, 2400, 4), np.uint8, 255),  # four channels, large
    ],
)
def test_fused_path_equals_normalize_then_skimage_resize(shape, dtype, maxval):
    rng = np.random.default_rng(sum(shape))
    arr = rng.integers(0, maxval + 1, size=shape).astype(dtype)
    want = reference_model_input(normalize(arr, maxval))
    got = model_input(arr, maxval)
    assert np.abs(got - want).max() <= PIXEL_BOUND
    assert np.abs(to_model_input(normalize(arr, maxval)) - want).max() <= PIXEL_BOUND


@pytest.mark.parametrize("n", [50, 223, 224, 225, 448, 2373])
def test_resize_operator_is_skimage_resize_along_one_axis(n):
    """Row i of the operator is what skimage does to a unit impulse, for every input position."""
    op, row_sums = resize_operator(n)
    impulses = np.eye(n, dtype=np.float32)
    # resize each impulse (as a column) along axis 0 only: (n, n) -> (224, n) with the
    # anti-aliasing sigma of the (n -> 224) axis and none along the other.
    sigma = max(0.0, (n / 224 - 1) / 2)
    want = skimage.transform.resize(
        impulses,
        (224, n),
        mode="constant",
        preserve_range=True,
        anti_aliasing=n > 224,
        anti_aliasing_sigma=(sigma, 0) if n > 224 else None,
        order=1,
    )
    assert np.abs(op.toarray() - want).max() < 1e-6
    assert np.allclose(row_sums, want.sum(axis=1), atol=1e-5)


def test_pixel_range_and_shape_errors_are_kept():
    with pytest.raises(PreprocessError) as exc:
        model_input(np.full((100, 100), 5000, dtype=np.uint16), 4095)
    assert exc.value.code == "bad_pixel_range"
    with pytest.raises(PreprocessError) as exc:
        model_input(np.zeros((2, 100, 100, 3), dtype=np.uint8), 255)
    assert exc.value.code == "bad_shape"


# --- fast mode: reduced-scale JPEG decoding ----------------------------------------------


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_fast_path_decodes_large_jpegs_at_reduced_scale_and_stays_close(runtime):
    big = sample_bytes("covid-19-pneumonia-58-prior.jpg")  # 2373 x 2373
    wide = _jpeg(Image.open(io.BytesIO(big)).crop((0, 200, 2373, 2100)))  # crop off-centre
    for data in (big, wide):
        assert fast_preprocess._reduced_jpeg(data) is not None  # took the reduced path
        exact, fast = preprocess(data), fast_preprocess.preprocess_fast(data)
        assert fast.shape == exact.shape and fast.dtype == np.float32
        pixel = np.abs(fast - exact)
        assert pixel.mean() < 1.0 and pixel.max() < 64  # edges exact, detail averaged away
        probs = runtime.predict(np.stack([exact, fast]))
        assert np.abs(probs[0] - probs[1]).max() <= 0.01


def test_fast_path_is_the_exact_path_where_reduction_does_not_pay():
    for name in ("00000001_000.png", "16747_3_1.jpg", "Fake_MONOHR1.dcm"):  # PNG, 885-px JPEG, DICOM
        data = sample_bytes(name)
        assert np.array_equal(fast_preprocess.preprocess_fast(data), preprocess(data))


def test_draft_operator_is_exact_on_images_constant_over_each_block():
    scale, side = 2, 1800
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(side // scale, side // scale)).astype(np.float32)
    full = np.kron(blocks, np.ones((scale, scale), dtype=np.float32))
    op_full, _ = resize_operator(side)
    op, _ = fast_preprocess.draft_operator(side // scale, 0, side, scale)
    want = (op_full @ (op_full @ full).T).T
    got = (op @ (op @ blocks).T).T
    assert np.abs(got - want).max() < 1e-2


def test_fast_path_clips_like_the_exact_path_on_a_white_image():
    white = _jpeg(Image.new("L", (2000, 2000), 255))
    assert fast_preprocess._reduced_jpeg(white) is not None
    exact, fast = preprocess(white), fast_preprocess.preprocess_fast(white)
    assert exact.min() >= 1023 and fast.min() >= 1023  # no dim border from the zero padding
