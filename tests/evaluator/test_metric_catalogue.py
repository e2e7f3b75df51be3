"""The metric catalogue (HD95, NSD, sensitivity, precision) against independent oracles:
medpy's hd95, a direct scipy distance-transform NSD, scikit-learn's recall/precision; on
the real frames and on generated masks; and the example 2026 definition that uses them."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_score, recall_score

from iugc.challenge.definition import load_challenge
from iugc.challenge.labels import STRUCTURES
from iugc.data_manifest.io import read_mask
from iugc.evaluator.evaluate import evaluate_folder
from iugc.evaluator.metrics import hd95, nsd, precision, sensitivity
from tests.conftest import ROOT, degrade, real_mask_paths

EXAMPLE = ROOT / "docs" / "iugc2026.example.yaml"
medpy_binary = pytest.importorskip("medpy.metric.binary", reason="medpy is not installed (pip install -e '.[dev]')")


def scipy_nsd(pred, gt, tolerance):
    """Surface Dice written out with scipy: 4-connected borders, Euclidean distance maps."""
    cross = ndimage.generate_binary_structure(2, 1)
    sp = pred & ~ndimage.binary_erosion(pred, structure=cross, border_value=0)
    sg = gt & ~ndimage.binary_erosion(gt, structure=cross, border_value=0)
    to_g = ndimage.distance_transform_edt(~sg)[sp]
    to_p = ndimage.distance_transform_edt(~sp)[sg]
    return (np.sum(to_g <= tolerance) + np.sum(to_p <= tolerance)) / (sp.sum() + sg.sum())


def generated_pairs():
    """Blobs of every size, touching the frame border, several components, a full frame."""
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(40):
        size = int(rng.integers(8, 64))
        gt = np.zeros((size, size), np.uint8)
        pred = np.zeros_like(gt)
        for mask in (gt, pred):
            for _ in range(int(rng.integers(1, 4))):
                centre = (int(rng.integers(-2, size + 2)), int(rng.integers(-2, size + 2)))
                axes = (int(rng.integers(1, size // 2 + 1)), int(rng.integers(1, size // 2 + 1)))
                cv2.ellipse(mask, centre, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
        if i == 0:
            pred[:] = 1
        if gt.any() and pred.any():
            pairs.append((pred.astype(bool), gt.astype(bool)))
    single = np.zeros((9, 9), bool)
    single[4, 4] = True
    pairs.append((single, np.roll(single, 3, axis=1)))
    return pairs


def real_pairs(n=12):
    out = []
    for i, path in enumerate(real_mask_paths(n)):
        gt = read_mask(path)
        pred = degrade(gt, i + 1)
        for labels in STRUCTURES.values():
            p, g = np.isin(pred, labels), np.isin(gt, labels)
            if p.any() and g.any():
                out.append((p, g))
    return out


def test_hd95_matches_medpy_on_generated_masks():
    for pred, gt in generated_pairs():
        assert hd95(pred, gt) == pytest.approx(medpy_binary.hd95(pred, gt), abs=1e-9)


def test_hd95_matches_medpy_on_real_frames(psfhs_dir):
    pairs = real_pairs()
    assert len(pairs) > 30
    for pred, gt in pairs:
        assert hd95(pred, gt) == pytest.approx(medpy_binary.hd95(pred, gt), abs=1e-9)


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.0, 2.5, 5.0])
def test_nsd_matches_a_direct_scipy_computation(tolerance, psfhs_dir):
    pairs = generated_pairs() + real_pairs(6)
    values = [nsd(p, g, tolerance) for p, g in pairs]
    for (pred, gt), value in zip(pairs, values):
        assert value == pytest.approx(scipy_nsd(pred, gt, tolerance), abs=1e-12)
    assert 0 < np.mean(values) < 1  # the pairs are neither all matched nor all missed


def test_sensitivity_and_precision_match_scikit_learn(psfhs_dir):
    for pred, gt in generated_pairs() + real_pairs(6):
        assert sensitivity(pred, gt) == pytest.approx(recall_score(gt.ravel(), pred.ravel()), abs=1e-12)
        assert precision(pred, gt) == pytest.approx(precision_score(gt.ravel(), pred.ravel()), abs=1e-12)


def test_empty_mask_rules():
    empty = np.zeros((16, 16), bool)
    blob = empty.copy()
    blob[4:9, 4:9] = True
    assert (hd95(empty, empty), nsd(empty, empty, 2), sensitivity(empty, empty), precision(empty, empty)) == (0.0, 1.0, 1.0, 1.0)
    # a structure missed: worst case on every metric
    assert (hd95(empty, blob), nsd(empty, blob, 2), sensitivity(empty, blob), precision(empty, blob)) == (100.0, 0.0, 0.0, 0.0)
    # a structure predicted where there is none: worst case too
    assert (hd95(blob, empty), nsd(blob, empty, 2), sensitivity(blob, empty), precision(blob, empty)) == (100.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="tolerance"):
        nsd(blob, blob, -1)


def test_example_2026_definition_is_valid_and_uses_the_catalogue():
    run = subprocess.run([sys.executable, "-m", "iugc", "challenge", "show", str(EXAMPLE)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert {"hd95", "nsd", "sensitivity", "precision"} <= set(shown["metrics"]) and shown["nsd_tolerance_px"] == 2.0


def test_evaluation_with_the_catalogue_on_real_frames(psfhs_dir, tmp_path):
    challenge = load_challenge(EXAMPLE)
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    paths = real_mask_paths(6)
    for i, path in enumerate(paths):
        (truth / path.name).symlink_to(path)
        if i:  # the first case has no prediction: worst case
            cv2.imwrite(str(preds / path.name), degrade(read_mask(path), i))
    result = evaluate_folder(preds, truth, challenge, jobs=1, cache_dir=None, progress=False)
    first = result["cases"][paths[0].stem]
    assert [first[f"{m}_fh"] for m in ("hd95", "nsd", "sensitivity", "precision")] == [100.0, 0.0, 0.0, 0.0]
    for i, path in enumerate(paths[1:], start=1):
        gt, pred = read_mask(path), degrade(read_mask(path), i)
        case = result["cases"][path.stem]
        for name, labels in STRUCTURES.items():
            p, g = np.isin(pred, labels), np.isin(gt, labels)
            expected_hd95 = medpy_binary.hd95(p, g) if p.any() else 100.0
            assert case[f"hd95_{name}"] == pytest.approx(expected_hd95, abs=1e-9)
            expected_nsd = scipy_nsd(p, g, 2.0) if p.any() else 0.0
            assert case[f"nsd_{name}"] == pytest.approx(expected_nsd, abs=1e-12)
    agg = result["aggregates"]
    values = [c[f"nsd_{s}"] for c in result["cases"].values() for s in STRUCTURES]
    assert agg["nsd"] == pytest.approx(np.mean(values), abs=1e-12)
    assert "hd95" in agg and "sensitivity_ps" in agg
    # psfhs2023 lists none of them: its results are unchanged
    assert "hd95_ps" not in evaluate_folder(preds, truth, load_challenge("psfhs2023"), jobs=1, cache_dir=None, progress=False)["cases"][paths[1].stem]
