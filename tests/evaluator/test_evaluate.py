"""`iugc evaluate` end to end: real cases against the SimpleITK oracle, bad input, caching."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.metrics import roc_auc_score

from iugc.challenge.labels import STRUCTURES
from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.io import read_mask
from iugc.data_manifest.phantom import write_phantom_dataset
from iugc.evaluator.reference import reference_biometry, sitk_segmentation_metrics
from tests.conftest import ROOT, degrade, real_mask_paths

N_CASES = 24


def run_iugc(*args, env_cache=None):
    env = None
    if env_cache is not None:
        import os

        env = dict(os.environ, IUGC_CACHE_DIR=str(env_cache))
    return subprocess.run([sys.executable, "-m", "iugc", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def real_setup(psfhs_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    source = root / "source"
    for sub in ("images", "masks"):
        (source / sub).mkdir(parents=True)
        for path in sorted((psfhs_dir / sub).glob("*.png"))[:N_CASES]:
            (source / sub / path.name).symlink_to(path)
    truth = root / "truth"
    import_dataset("png", source, truth, progress=False)
    preds = root / "preds"
    preds.mkdir()
    ids = [p.stem for p in real_mask_paths(N_CASES)]
    bad = {ids[0]: "missing", ids[1]: "garbage", ids[2]: "shape", ids[3]: "labels", ids[4]: "raw78", ids[5]: "mha", ids[6]: "nii"}
    for i, case_id in enumerate(ids):
        pred = degrade(read_mask(psfhs_dir / "masks" / f"{case_id}.png"), i)
        kind = bad.get(case_id)
        if kind == "missing":
            continue
        if kind == "garbage":
            (preds / f"{case_id}.png").write_bytes(b"\x89PNG but not really")
        elif kind == "shape":
            cv2.imwrite(str(preds / f"{case_id}.png"), pred[:200])
        elif kind == "labels":
            cv2.imwrite(str(preds / f"{case_id}.png"), np.where(pred == 2, 5, pred).astype(np.uint8))
        elif kind == "raw78":
            cv2.imwrite(str(preds / f"{case_id}.png"), np.choose(pred, [0, 7, 8]).astype(np.uint8))
        elif kind == "mha":
            sitk.WriteImage(sitk.GetImageFromArray(pred), str(preds / f"{case_id}.mha"))
        elif kind == "nii":
            sitk.WriteImage(sitk.GetImageFromArray(pred), str(preds / f"{case_id}.nii.gz"))
        else:
            cv2.imwrite(str(preds / f"{case_id}.png"), pred)
    (preds / "notes.txt").write_text("stray file")
    # the real frames are all standard planes (labels derived at import): a team's probabilities
    probs = {case_id: {"p_standard_plane": 0.9} for case_id in ids if bad.get(case_id) != "missing"}
    (preds / "predictions.json").write_text(json.dumps(probs))
    return {"root": root, "truth": truth, "preds": preds, "ids": ids, "bad": bad}


@pytest.mark.parametrize("challenge, method", [("psfhs2023", "ellipse"), ("iugc2024", "contour")])
def test_real_cases_match_the_oracle(real_setup, challenge, method, tmp_path):
    out = tmp_path / "result.json"
    run = run_iugc("evaluate", "--predictions", real_setup["preds"], "--ground-truth", real_setup["truth"],
                   "--challenge", challenge, "--out", out, "--quiet", env_cache=tmp_path / "cache")
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["challenge"] == challenge and set(result["cases"]) == set(real_setup["ids"])
    bad = real_setup["bad"]
    for case_id, case in result["cases"].items():
        gt = read_mask(real_setup["truth"] / "masks" / f"{case_id}.png")
        gt_bio = reference_biometry(gt, method)
        kind = bad.get(case_id)
        if kind in ("missing", "garbage", "shape", "labels"):
            assert case["error"] and case_id in run.stderr
            assert all(case[f"dice_{s}"] == 0 and case[f"hd_{s}"] == 100 and case[f"asd_{s}"] == 100 for s in STRUCTURES)
            if challenge == "psfhs2023":  # the official convention: the missing AoP counts as 0
                assert case["aop_pred"] == 0.0 and case["aop_error"] == pytest.approx(gt_bio.aop, abs=1e-9)
            else:
                assert case["aop_error"] == 180.0
            assert case["aop_gt"] == pytest.approx(gt_bio.aop, abs=1e-9)
            continue
        assert case["error"] is None, case
        index = real_setup["ids"].index(case_id)
        pred = degrade(gt, index)
        expected = sitk_segmentation_metrics(pred, gt)
        for key, value in expected.items():
            assert abs(case[key] - value) <= 1e-6, (case_id, key)
        pred_bio = reference_biometry(pred, method)
        assert case["aop_gt"] == pytest.approx(gt_bio.aop, abs=1e-3)
        if pred_bio.aop is None and challenge == "psfhs2023":  # e.g. a dropped PS: AoP 0, as officially
            assert case["aop_pred"] == 0.0 and case["aop_error"] == pytest.approx(gt_bio.aop, abs=1e-3)
        elif pred_bio.aop is None:
            assert case["aop_pred"] is None and case["aop_error"] == 180.0
        else:
            assert case["aop_error"] == pytest.approx(abs(pred_bio.aop - gt_bio.aop), abs=1e-3)
        if method == "contour" and pred_bio.hsd is None:
            assert case["hsd_pred"] is None and case["hsd_error"] == 100.0
        elif method == "contour":
            assert case["hsd_error"] == pytest.approx(abs(pred_bio.hsd - gt_bio.hsd), abs=1e-9)
        else:
            assert case["hsd_error"] is None
    assert "garbage" not in run.stdout
    assert "notes.txt" in run.stderr
    messages = {kind: result["cases"][cid]["error"] for cid, kind in bad.items() if result["cases"][cid]["error"]}
    assert "missing prediction" in messages["missing"]
    assert "not a decodable" in messages["garbage"]
    assert "(200, 256)" in messages["shape"] and "(256, 256)" in messages["shape"]
    assert "label 5 is outside the schema" in messages["labels"]
    # aggregates and the score, recomputed here from the per-case values
    cases = list(result["cases"].values())
    agg = result["aggregates"]
    for metric in ("dice", "hd", "asd"):
        assert agg[metric] == pytest.approx(np.mean([c[f"{metric}_{s}"] for c in cases for s in STRUCTURES]), abs=1e-12)
    assert agg["aop_error"] == pytest.approx(np.mean([c["aop_error"] for c in cases]), abs=1e-12)
    if challenge == "psfhs2023":
        expected_score = (
            0.25 * round(agg["dice"], 8)
            + 0.125 * (1 - round(agg["hd"] / 100, 8))
            + 0.125 * (1 - round(agg["asd"] / 100, 8))
            + 0.5 * (1 - agg["aop_error"] / 180)
        )
        assert result["score"] == pytest.approx(expected_score, abs=1e-12)
    else:
        assert result["score"] is None and "auc" in result["score_note"]


def test_cached_truth_gives_identical_results(real_setup, tmp_path):
    outs = []
    for name in ("first", "second"):
        out = tmp_path / f"{name}.json"
        run = run_iugc("evaluate", "--predictions", real_setup["preds"], "--ground-truth", real_setup["truth"],
                       "--challenge", "iugc2024", "--out", out, "--quiet", env_cache=tmp_path / "cache")
        assert run.returncode == 0, run.stderr
        outs.append(json.loads(out.read_text()))
    assert len(list((tmp_path / "cache").rglob("*.bin"))) == N_CASES
    for out in outs:  # the only field that may differ: when each was made
        del out["provenance"]["created_at"]
    assert outs[0] == outs[1]


def test_single_process_equals_parallel(real_setup, tmp_path):
    from iugc.challenge.definition import load_challenge
    from iugc.evaluator.evaluate import evaluate_folder

    c = load_challenge("psfhs2023")
    one = evaluate_folder(real_setup["preds"], real_setup["truth"], c, jobs=1, progress=False)
    two = evaluate_folder(real_setup["preds"], real_setup["truth"], c, jobs=2, progress=False)
    del one["provenance"]["created_at"], two["provenance"]["created_at"]
    assert one == two


def test_classification_scored_with_probabilities(tmp_path):
    truth = tmp_path / "truth"
    manifest = write_phantom_dataset(truth, 16, seed=3, size=128, nonstandard_fraction=0.5)
    preds = tmp_path / "preds"
    preds.mkdir()
    rng = np.random.default_rng(0)
    probs, labels = {}, {}
    for case in manifest.cases:
        cv2.imwrite(str(preds / f"{case.case_id}.png"), read_mask(truth / case.mask))
        probs[case.case_id] = round(float(rng.random()), 3)
        labels[case.case_id] = int(case.standard_plane)
    missing = manifest.cases[0].case_id
    del probs[missing]
    (preds / "predictions.json").write_text(json.dumps({k: {"p_standard_plane": v} for k, v in probs.items()}))
    out = tmp_path / "r.json"
    run = run_iugc("evaluate", "--predictions", preds, "--ground-truth", truth, "--challenge", "iugc2024", "--out", out, "--no-cache", "--quiet")
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    probs[missing] = float(1 - labels[missing])  # a missing probability is the worst case
    ids = list(labels)
    assert result["aggregates"]["auc"] == pytest.approx(roc_auc_score([labels[i] for i in ids], [probs[i] for i in ids]))
    assert "missing p_standard_plane" in result["cases"][missing]["error"]
    assert result["score"] is not None, result["score_note"]
    # non-standard phantom frames miss a structure: their truth AoP is undefined and excluded
    assert result["aggregates"]["n_excluded_aop"] == sum(1 for c in manifest.cases if set(c.structures) != {"ps", "fh"})


def test_missing_folder_is_a_clear_error(tmp_path):
    cv2.imwrite(str(tmp_path / "case1.png"), np.zeros((8, 8), np.uint8))
    run = run_iugc("evaluate", "--predictions", tmp_path / "nope", "--ground-truth", tmp_path, "--challenge", "psfhs2023", "--out", tmp_path / "o.json")
    assert run.returncode != 0 and "does not exist" in run.stderr
    assert not (tmp_path / "o.json").exists()


def test_an_empty_predictions_folder_is_refused_and_nothing_is_written(tmp_path):
    cv2.imwrite(str(tmp_path / "case1.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "preds").mkdir()
    run = run_iugc("evaluate", "--predictions", tmp_path / "preds", "--ground-truth", tmp_path, "--challenge", "psfhs2023",
                   "--out", tmp_path / "o.json", "--no-cache", "--quiet")
    assert run.returncode == 1 and "is empty: no mask and no predictions.json to score" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o.json").exists()


_SIGNAL_PROBE = """
import json, multiprocessing, os, signal, sys, time

from iugc.challenge.definition import load_challenge
from iugc.evaluator import evaluate
from iugc.common.signals import interrupt_on_signals

SIG = int(sys.argv[1])


def child(init_name):
    # a forked pool worker: the parent's handler, then the initializer, then a SIGTERM
    # arriving during a case (inside the per-case except, as _work has it)
    getattr(evaluate, init_name)(load_challenge("psfhs2023"), None)
    try:
        os.kill(os.getpid(), SIG)
        time.sleep(0.5)
    except Exception:
        pass


interrupt_on_signals()  # as `iugc` does before every command
codes = {}
for name in ("_init_pool_worker", "_init_worker"):
    proc = multiprocessing.get_context("fork").Process(target=child, args=(name,))
    proc.start()
    proc.join(60)
    codes[name] = proc.exitcode
    if proc.exitcode is None:
        proc.kill()
print(json.dumps(codes))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the pool forks only on Linux")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_forked_evaluation_workers_stop_on_a_signal_even_under_evaluate_image(sig):
    # In a fresh interpreter: forking the pytest worker itself (with torch's threads
    # running) can deadlock the child, which would say nothing about our handlers.
    import signal

    number = int(getattr(signal, sig))
    run = subprocess.run([sys.executable, "-c", _SIGNAL_PROBE, str(number)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    codes = json.loads(run.stdout.strip().splitlines()[-1])
    # SIGTERM ends the pool worker, as Pool.terminate expects, through SystemExit (status 128 + 15,
    # its locks released); SIGINT (Ctrl-C reaches the whole process group) is the parent's to act
    # on, so the worker ignores it and carries on.
    assert codes["_init_pool_worker"] == {"SIGTERM": 128 + number, "SIGINT": 0}[sig]
    # The inherited handler alone (a fork without the initializer) gives the signal its action
    # from before `iugc` installed its own, instead of an exception the per-case `except` would
    # swallow (the old hang): SIGTERM kills, SIGINT raises KeyboardInterrupt, exit status 1.
    assert codes["_init_worker"] == {"SIGTERM": -number, "SIGINT": 1}[sig]
