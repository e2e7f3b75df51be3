"""Scoring one split or a list of cases, labels the data implies, and the provenance of
every result (issue 19, items 3 and 4)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from iugc.challenge.definition import load_challenge
from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.manifest import load_manifest, write_manifest
from iugc.data_manifest.split import parse_blocks, split_by_blocks
from tests.conftest import ROOT, link_frames

IDS_TRAIN = ["03744", "03745", "03746", "03747"]
IDS_VAL = ["04301", "04302", "04303"]


def iugc(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "iugc", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def split_data(psfhs_dir, tmp_path_factory):
    """Seven real frames, split into train (4) and validation (3), and perfect predictions."""
    root = tmp_path_factory.mktemp("split")
    ds = root / "ds"
    import_dataset("png", link_frames(root / "source", IDS_TRAIN + IDS_VAL), ds, progress=False)
    write_manifest(ds, split_by_blocks(load_manifest(ds), parse_blocks("train=03744-04300,validation=04301-04401")))
    preds = root / "preds"
    preds.mkdir()
    for case_id in IDS_TRAIN + IDS_VAL:
        (preds / f"{case_id}.png").write_bytes((ds / "masks" / f"{case_id}.png").read_bytes())
    (preds / "predictions.json").write_text(json.dumps({i: {"p_standard_plane": 0.8} for i in IDS_TRAIN + IDS_VAL}))
    return root


def _evaluate(split_data, tmp_path, *extra, challenge="psfhs2023"):
    out = tmp_path / "r.json"
    run = iugc("evaluate", "--predictions", split_data / "preds", "--ground-truth", split_data / "ds", "--challenge", challenge,
               "--out", out, "--no-cache", *extra)
    return run, (json.loads(out.read_text()) if out.exists() else None)


def test_split_scores_only_that_split(split_data, tmp_path):
    run, result = _evaluate(split_data, tmp_path, "--split", "validation")
    assert run.returncode == 0, run.stderr
    assert sorted(result["cases"]) == IDS_VAL
    assert "3 cases selected by --split validation" in run.stdout
    # the other split's masks are neither missing cases nor stray files
    assert "missing" not in run.stderr and "match no ground-truth case" not in run.stderr, run.stderr
    assert result["provenance"]["split"] == "validation" and result["provenance"]["n_cases"] == 3


def test_cases_file_scores_the_listed_cases(split_data, tmp_path):
    listing = tmp_path / "cases.txt"
    listing.write_text("# two of the train block\n03745\n\n03747  # and a comment\n")
    run, result = _evaluate(split_data, tmp_path, "--cases", listing)
    assert run.returncode == 0, run.stderr
    assert sorted(result["cases"]) == ["03745", "03747"] and "2 cases selected by --cases" in run.stdout


def test_bad_selections_are_one_line_and_write_nothing(split_data, tmp_path):
    run, result = _evaluate(split_data, tmp_path, "--split", "test")
    assert run.returncode != 0 and result is None and "Traceback" not in run.stderr
    assert "no case of" in run.stderr and "split 'test'" in run.stderr and "train 4, validation 3" in run.stderr
    listing = tmp_path / "cases.txt"
    listing.write_text("03745\n09999\n")
    run, result = _evaluate(split_data, tmp_path, "--split", "train", "--cases", listing)
    assert run.returncode != 0 and result is None and "09999" in run.stderr and "split 'train'" in run.stderr
    plain = iugc("evaluate", "--predictions", split_data / "preds", "--ground-truth", split_data / "ds" / "masks",
                 "--challenge", "psfhs2023", "--out", tmp_path / "p.json", "--split", "train")
    assert plain.returncode != 0 and "needs a dataset with manifest.json" in plain.stderr


def test_real_frames_are_labelled_standard_and_marked_derived(split_data, tmp_path):
    manifest = load_manifest(split_data / "ds")
    assert all(c.structures == ("ps", "fh") for c in manifest.cases)  # both structures on every real frame
    assert all(c.standard_plane is True and c.standard_plane_derived for c in manifest.cases)
    # iugc2024 now scores classification on them; with a single class the AUC, hence the
    # score, is undefined, and the output says why instead of a bare "-"
    run, result = _evaluate(split_data, tmp_path, challenge="iugc2024")
    assert run.returncode == 0, run.stderr
    assert result["aggregates"]["accuracy"] == 1.0 and result["score"] is None
    assert "score undefined" in run.stdout and "'auc'" in run.stdout


def test_psfhs_release_import_derives_the_label(psfhs_dir, tmp_path):
    manifest = import_dataset("psfhs", psfhs_dir / "release_sample", tmp_path / "ds", progress=False)
    for case in manifest.cases:
        assert case.standard_plane == (set(case.structures) == {"ps", "fh"}) and case.standard_plane_derived


def test_provenance_names_platform_challenge_truth_and_time(split_data, tmp_path):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    run, result = _evaluate(split_data, tmp_path, "--split", "validation", challenge="iugc2024")
    assert run.returncode == 0, run.stderr
    prov = result["provenance"]
    from importlib.metadata import version

    assert prov["platform_version"] == version("iugc-platform")
    assert prov["challenge"] == "iugc2024"
    canonical = json.dumps(load_challenge("iugc2024").model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert prov["challenge_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    # the truth hash, recomputed here from the manifest's own records of the scored cases
    records = {c.case_id: c for c in load_manifest(split_data / "ds").cases}
    rows = sorted([i, records[i].mask_sha256, records[i].standard_plane] for i in IDS_VAL)
    assert prov["truth_manifest_sha256"] == hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()
    assert prov["n_cases"] == len(IDS_VAL) and prov["synthetic_truth"] is False
    assert prov["dataset_manifest_sha256"] == hashlib.sha256((split_data / "ds" / "manifest.json").read_bytes()).hexdigest()
    made = datetime.fromisoformat(prov["created_at"])
    assert made.tzinfo is not None and before <= made <= datetime.now(timezone.utc)
    assert prov["image_digest"] is None
    # another case set gives another truth hash; the same one, the same hash
    _, train = _evaluate(split_data, tmp_path, "--split", "train", challenge="iugc2024")
    _, again = _evaluate(split_data, tmp_path, "--split", "validation", challenge="iugc2024")
    assert train["provenance"]["truth_manifest_sha256"] != prov["truth_manifest_sha256"]
    assert again["provenance"]["truth_manifest_sha256"] == prov["truth_manifest_sha256"]


def test_evaluate_image_results_carry_provenance_and_selection(split_data, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "r.json"
    run = iugc("evaluate-image", "--image", "baseline", "--runner", "local", "--data", split_data / "ds", "--challenge",
               "iugc2024", "--split", "validation", "--out", out)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "succeeded" and sorted(result["cases"]) == IDS_VAL
    assert "3 cases selected by --split validation" in run.stdout
    prov = result["provenance"]
    assert prov["image_digest"] == "local:baseline" and prov["n_cases"] == 3 and prov["split"] == "validation"
    assert "score undefined" in run.stdout  # a single class: the reason is printed, not a bare "-"


def test_phantom_data_stays_synthetic_when_imported(tmp_path):
    made = iugc("data", "phantom", "--dest", tmp_path / "phantom", "--cases", "6")
    assert made.returncode == 0, made.stderr
    imported = iugc("data", "import", "--layout", "png", "--source", tmp_path / "phantom", "--dest", tmp_path / "ds")
    assert imported.returncode == 0, imported.stderr
    assert "SYNTHETIC" in imported.stdout
    manifest = load_manifest(tmp_path / "ds")
    source = load_manifest(tmp_path / "phantom")
    assert manifest.synthetic is True
    # the phantom's own labels are kept (not re-derived): its non-standard frames stay so
    assert [c.standard_plane for c in manifest.cases] == [c.standard_plane for c in source.cases]
    raw = iugc("data", "phantom", "--dest", tmp_path / "raw", "--layout", "iugc2024", "--videos", "1", "--frames", "4")
    assert raw.returncode == 0, raw.stderr
    clips = iugc("data", "import", "--layout", "iugc2024", "--source", tmp_path / "raw", "--dest", tmp_path / "clips")
    assert clips.returncode == 0, clips.stderr
    assert load_manifest(tmp_path / "clips").synthetic is True
    # results scored on it say so
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in manifest.cases:
        (preds / f"{case.case_id}.png").write_bytes((tmp_path / "ds" / case.mask).read_bytes())
    run = iugc("evaluate", "--predictions", preds, "--ground-truth", tmp_path / "ds", "--challenge", "psfhs2023",
               "--out", tmp_path / "r.json", "--quiet", "--no-cache")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "r.json").read_text())["provenance"]["synthetic_truth"] is True
