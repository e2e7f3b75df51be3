"""The corner-case table of docs/challenge-definition.md, one test per row and challenge.

Each row is a truth/prediction pair built from a real PSFHS frame, scored by
`evaluate_folder`; the expected values come from the independent oracles (SimpleITK for
Dice/HD/ASD, the loop transcription of the IUGC code for the contour method) with the
challenge's undefined-value rule applied here, written out by hand.
"""
import json

import cv2
import numpy as np
import pytest

from iugc.challenge.biometry import contour_biometry
from iugc.challenge.definition import load_challenge
from iugc.challenge.labels import STRUCTURES
from iugc.data_manifest.io import read_mask
from iugc.data_manifest.phantom import write_phantom_dataset
from iugc.evaluator.evaluate import evaluate_folder
from iugc.evaluator.reference import reference_biometry, sitk_segmentation_metrics
from tests.conftest import real_mask_paths

CHALLENGES = ("psfhs2023", "iugc2024")
INVALID_FILE_ROWS = ("missing_file", "unreadable_file", "size_mismatch", "labels_outside_schema")


def _rows(truth: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(truth, prediction) per row; a prediction of None is written by the fixture itself."""
    empty = np.zeros_like(truth)
    ys, xs = np.nonzero(truth == 1)
    cy, cx = int(ys.mean()), int(xs.mean())

    def with_ps(pixels):
        out = truth.copy()
        out[out == 1] = 0
        for y, x in pixels:
            out[cy + y, cx + x] = 1
        return out

    no_tangent = truth.copy()
    no_tangent[no_tangent == 1] = 0
    fy, fx = np.nonzero(truth == 2)
    # a short symphysis inside the head: its inferior end lies within the head's outline
    cv2.ellipse(no_tangent, (int(fx.mean()), int(fy.mean())), (12, 4), 0, 0, 360, 1, -1)
    return {
        "empty_prediction": (truth, empty),
        "empty_truth": (empty, truth),
        "both_empty": (empty, empty),
        "ps_of_1_point": (truth, with_ps([(0, 0)])),
        "ps_of_4_points": (truth, with_ps([(0, 0), (0, 1), (1, 0), (1, 1)])),
        "no_tangent_point": (truth, no_tangent),
        "mask_fills_frame": (truth, np.full_like(truth, 2)),
    }


@pytest.fixture(scope="module")
def table(psfhs_dir, tmp_path_factory):
    """{challenge: (result, {row: (truth, prediction or None)})}."""
    root = tmp_path_factory.mktemp("corners")
    truth = read_mask(real_mask_paths(1)[0])
    rows = _rows(truth)
    gt_dir, pred_dir = root / "truth", root / "preds"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for name, (gt, pred) in rows.items():
        cv2.imwrite(str(gt_dir / f"{name}.png"), gt)
        cv2.imwrite(str(pred_dir / f"{name}.png"), pred)
    for name in INVALID_FILE_ROWS:
        cv2.imwrite(str(gt_dir / f"{name}.png"), truth)
        rows[name] = (truth, None)
    (pred_dir / "unreadable_file.png").write_bytes(b"\x89PNG truncated")
    cv2.imwrite(str(pred_dir / "size_mismatch.png"), truth[:200])
    cv2.imwrite(str(pred_dir / "labels_outside_schema.png"), np.where(truth == 2, 5, truth).astype(np.uint8))
    out = {}
    for name in CHALLENGES:
        result = evaluate_folder(pred_dir, gt_dir, load_challenge(name), jobs=1, cache_dir=None, progress=False)
        out[name] = (result, rows)
    return out


def _expected_biometry(challenge: str, gt: np.ndarray, pred: np.ndarray | None) -> dict:
    """The table's AoP/HSD rule, applied to the oracle's values."""
    method = "ellipse" if challenge == "psfhs2023" else "contour"
    g = reference_biometry(gt, method)
    p = None if pred is None else reference_biometry(pred, method)
    p_aop, p_hsd = (None, None) if p is None else (p.aop, p.hsd)
    if challenge == "psfhs2023":  # the official code: AoP starts at 0 and stays there
        g_aop, p_aop = g.aop or 0.0, p_aop or 0.0
        return {"aop_pred": p_aop, "aop_gt": g_aop, "aop_error": abs(p_aop - g_aop), "hsd_error": None}
    expected = {"aop_gt": g.aop, "hsd_gt": g.hsd}
    expected["aop_error"] = None if g.aop is None else 180.0 if p_aop is None else abs(p_aop - g.aop)
    expected["hsd_error"] = None if g.hsd is None else 100.0 if p_hsd is None else abs(p_hsd - g.hsd)
    return expected


ROWS = [
    "empty_prediction", "empty_truth", "both_empty", "ps_of_1_point", "ps_of_4_points",
    "no_tangent_point", "mask_fills_frame", *INVALID_FILE_ROWS,
]


@pytest.mark.parametrize("challenge", CHALLENGES)
@pytest.mark.parametrize("row", ROWS)
def test_corner_case_row(table, challenge, row):
    result, rows = table[challenge]
    case = result["cases"][row]
    gt, pred = rows[row]
    if pred is None:  # the prediction is missing or invalid: worst-case segmentation values
        assert case["error"] and "scored as worst case" in case["error"]
        for s in STRUCTURES:
            assert (case[f"dice_{s}"], case[f"hd_{s}"], case[f"asd_{s}"]) == (0.0, 100.0, 100.0)
    else:
        assert case["error"] is None
        for key, value in sitk_segmentation_metrics(pred, gt).items():
            assert case[key] == pytest.approx(value, abs=1e-6), key
    for key, value in _expected_biometry(challenge, gt, pred).items():
        if value is None:
            assert case[key] is None, key
        else:
            assert case[key] == pytest.approx(value, abs=1e-6), key


def test_the_rows_test_what_they_claim(table):
    result, rows = table["iugc2024"]
    truth = rows["empty_prediction"][0]
    gt_aop = reference_biometry(truth, "ellipse").aop
    psfhs = table["psfhs2023"][0]["cases"]
    # a prediction missing a structure: |0 - AoP(truth)|, about 90-130 degrees, not 180
    assert psfhs["empty_prediction"]["aop_error"] == pytest.approx(gt_aop) and 60 < gt_aop < 150
    assert psfhs["missing_file"]["aop_error"] == pytest.approx(gt_aop)
    assert result["cases"]["empty_prediction"]["aop_error"] == 180.0
    # the truth missing a structure: PSFHS measures from 0, IUGC leaves the case out
    assert psfhs["empty_truth"]["aop_gt"] == 0.0 and psfhs["both_empty"]["aop_error"] == 0.0
    assert result["cases"]["empty_truth"]["aop_error"] is None
    assert result["aggregates"]["n_excluded_aop"] == 2  # empty_truth and both_empty
    assert table["psfhs2023"][0]["aggregates"]["n_excluded_aop"] == 0
    # no tangent point: the contour AoP is undefined (worst case) but HSD is measured
    no_tangent = contour_biometry(rows["no_tangent_point"][1])
    assert no_tangent.tangent_point is None and no_tangent.hsd is not None
    assert result["cases"]["no_tangent_point"]["aop_error"] == 180.0
    assert result["cases"]["no_tangent_point"]["hsd_error"] < 100
    # 4 contour points: no ellipse (PSFHS: 0), but the contour method measures
    assert psfhs["ps_of_4_points"]["aop_pred"] == 0.0
    assert result["cases"]["ps_of_4_points"]["aop_pred"] is not None
    assert result["cases"]["ps_of_1_point"]["aop_pred"] is None
    # a mask filling the frame has no surface: ASD is the worst case, HD is measured
    full = result["cases"]["mask_fills_frame"]
    assert full["asd_fh"] == 100.0 and full["hd_fh"] > 100  # HD is not capped: the far corner is 141.7 px away
    messages = {row: result["cases"][row]["error"] for row in INVALID_FILE_ROWS}
    assert "missing prediction" in messages["missing_file"]
    assert "not a decodable" in messages["unreadable_file"]
    assert "(200, 256)" in messages["size_mismatch"]
    assert "label 5 is outside the schema" in messages["labels_outside_schema"]


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    """Three labelled standard planes (SYNTHETIC phantoms: the PNG import of the real
    frames stores no label yet), predicted perfectly, with one probability missing and one
    out of range."""
    root = tmp_path_factory.mktemp("probabilities")
    truth = root / "truth"
    manifest = write_phantom_dataset(truth, 3, seed=0, size=128, nonstandard_fraction=0.0)
    ids = [c.case_id for c in manifest.cases]
    preds = root / "preds"
    preds.mkdir()
    for case in manifest.cases:
        (preds / f"{case.case_id}.png").symlink_to(truth / case.mask)
    (preds / "predictions.json").write_text(json.dumps({ids[0]: {"p_standard_plane": 0.8}, ids[2]: {"p_standard_plane": 1.5}}))
    return ids, {name: evaluate_folder(preds, truth, load_challenge(name), jobs=1, cache_dir=None, progress=False) for name in CHALLENGES}


@pytest.mark.parametrize("row, index", [("missing_probability", 1), ("out_of_range_probability", 2)])
def test_probability_rows(classified, row, index):
    ids, results = classified
    iugc = results["iugc2024"]["cases"]
    # a standard plane (label 1): a missing or invalid p scores 1 - 1 = 0, the worst case
    assert iugc[ids[index]]["standard_plane"] == 1 and iugc[ids[index]]["p_standard_plane"] == 0.0
    assert "missing p_standard_plane" in iugc[ids[index]]["error"]
    assert iugc[ids[0]]["p_standard_plane"] == 0.8
    if row == "out_of_range_probability":
        assert any("must be a number in [0, 1]" in w for w in results["iugc2024"]["warnings"])
    # PSFHS 2023 has no classification task: the probability is not scored at all
    psfhs = results["psfhs2023"]["cases"][ids[index]]
    assert "p_standard_plane" not in psfhs and psfhs["error"] is None
