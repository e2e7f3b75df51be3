"""The fast metrics against SimpleITK (the official semantics) on real and generated masks."""
import numpy as np
import pytest

import iugc.evaluator.metrics as metrics_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iugc.challenge.labels import STRUCTURES, structure_mask
from iugc.data_manifest.io import read_mask
from iugc.evaluator.metrics import dice, surface, surface_distances
from iugc.evaluator.reference import sitk_structure_metrics
from iugc.evaluator.scores import segmentation_values
from tests.conftest import degrade, real_mask_paths

TOL = 1e-9  # the issue asks for 1e-6; float32-rounded distances (as SimpleITK) agree to ~1e-12


BACKENDS = ["numpy"] + (["c"] if metrics_module._fastmetrics is not None else [])


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Every oracle test runs on both implementations: the C kernel and the NumPy path."""
    monkeypatch.setattr(metrics_module, "BACKEND", request.param)
    return request.param


def test_compiled_kernel_is_built_in_ci():
    import os

    if os.environ.get("CI") and metrics_module._fastmetrics is None:
        pytest.fail("the optional C kernel did not build in CI (it should: gcc and headers are there)")


def assert_matches_sitk(pred: np.ndarray, gt: np.ndarray, where: str = "") -> None:
    ours = {"dice": dice(pred, gt), **surface_distances(pred, gt)}
    ref = sitk_structure_metrics(pred, gt)
    for key in ("dice", "hd", "asd"):
        assert abs(ours[key] - ref[key]) <= TOL, f"{where} {key}: ours {ours[key]!r} vs SimpleITK {ref[key]!r}"
    labels_p = pred.astype(np.uint8)
    labels_g = gt.astype(np.uint8)
    batch = metrics_module.structure_metrics(labels_p, labels_g, {"x": (1,)})["x"]
    for key in ("dice", "hd", "asd"):
        assert abs(batch[key] - ref[key]) <= TOL, f"{where} batched {key}"


CHUNKS = 8


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_real_case_matches_sitk(psfhs_dir, chunk, backend):
    paths = real_mask_paths()[chunk::CHUNKS]
    assert paths
    for path in paths:
        index = int(path.stem)
        gt = read_mask(path)
        pred = degrade(gt, index)
        for name in STRUCTURES:
            assert_matches_sitk(structure_mask(pred, name), structure_mask(gt, name), f"{path.name}/{name}")


@st.composite
def masks(draw, shape):
    h, w = shape
    kind = draw(st.sampled_from(["empty", "full", "pixel", "rects", "noise", "border"]))
    m = np.zeros(shape, bool)
    if kind == "full":
        m[:] = True
    elif kind == "pixel":
        m[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
    elif kind in ("rects", "border"):
        for _ in range(draw(st.integers(1, 4))):
            r0, c0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            r1, c1 = draw(st.integers(r0 + 1, h)), draw(st.integers(c0 + 1, w))
            m[r0:r1, c0:c1] = True
        if kind == "border":
            m[:, 0] = True
    elif kind == "noise":
        seed = draw(st.integers(0, 2**32 - 1))
        m = np.random.default_rng(seed).random(shape) < draw(st.floats(0.01, 0.6))
    return m


@st.composite
def mask_pairs(draw):
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    return draw(masks(shape)), draw(masks(shape))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask_pairs())
def test_generated_masks_match_sitk(pair):
    pred, gt = pair
    for backend in BACKENDS:
        metrics_module.BACKEND = backend
        try:
            assert_matches_sitk(pred, gt, backend)
        finally:
            metrics_module.BACKEND = BACKENDS[-1]


def test_empty_prediction_scores_worst_case(backend):
    gt = np.zeros((10, 10), bool)
    gt[2:5, 2:5] = True
    empty = np.zeros_like(gt)
    assert dice(empty, gt) == 0.0
    assert surface_distances(empty, gt) == {"hd": 100.0, "asd": 100.0}



def test_correctly_predicted_absence_scores_perfect(backend):
    empty = np.zeros((10, 10), bool)
    assert dice(empty, empty) == 1.0
    assert surface_distances(empty, empty) == {"hd": 0.0, "asd": 0.0}
    labels = np.zeros((10, 10), np.uint8)
    labels[2:6, 2:6] = 2  # FH only: PS absent in both
    values = metrics_module.structure_metrics(labels, labels, {"ps": (1,), "fh": (2,)})
    assert values["ps"] == {"dice": 1.0, "hd": 0.0, "asd": 0.0}
    assert values["fh"]["dice"] == 1.0


def test_empty_truth_keeps_dice_formula_and_worst_distances(backend):
    pred = np.zeros((10, 10), bool)
    pred[0:2, 0:2] = True
    assert dice(pred, np.zeros_like(pred)) == pytest.approx(1 / 5)
    assert surface_distances(pred, np.zeros_like(pred)) == {"hd": 100.0, "asd": 100.0}


def test_full_frame_mask_has_no_surface_and_worst_asd(backend):
    full = np.ones((6, 6), bool)
    small = np.zeros((6, 6), bool)
    small[2, 2] = True
    assert not surface(full).any()
    result = surface_distances(small, full)
    assert result["asd"] == 100.0
    assert result["hd"] == pytest.approx(np.hypot(3, 3))


def test_shape_mismatch_message_names_both_shapes():
    with pytest.raises(ValueError, match=r"shapes differ: \(4, 4\) vs \(5, 5\)"):
        dice(np.zeros((4, 4), bool), np.zeros((5, 5), bool))


def test_segmentation_values_returns_every_structure(backend):
    gt = np.zeros((20, 20), np.uint8)
    gt[2:6, 2:8] = 1
    gt[10:18, 8:18] = 2
    values = segmentation_values(gt, gt)
    assert set(values) == {f"{m}_{s}" for m in ("dice", "hd", "asd") for s in STRUCTURES}
    assert all(values[f"dice_{s}"] == 1.0 for s in STRUCTURES)
    assert all(values[f"hd_{s}"] == 0.0 for s in STRUCTURES)
