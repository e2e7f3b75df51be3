"""The baseline as a submission: its image (ONNX Runtime, non-root, no PyTorch), the
trusted local runner, and agreement with `iugc baseline predict` + `iugc evaluate`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iugc.challenge.definition import load_challenge
from iugc.data_manifest.importers import import_dataset
from iugc.sandbox.docker_engine import Limits
from iugc.sandbox.evaluate_image import evaluate_image
from tests.conftest import ROOT
from tests.docker_support import require_engine

pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
CHALLENGE = load_challenge("iugc2024")
LIMITS = Limits(time_limit_seconds=300, memory_mb=2048, cpus=2, output_limit_mb=50)


@pytest.fixture(scope="module")
def cases(psfhs_dir, tmp_path_factory):
    dest = tmp_path_factory.mktemp("bi") / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", dest, progress=False)
    manifest = json.loads((dest / "manifest.json").read_text())
    for case in manifest["cases"]:
        case["standard_plane"] = True
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture(scope="module")
def checkpoint():
    """The shipped weights: the image is built from them by default."""
    from iugc.baseline.predict import weights_path

    return weights_path("default")


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory):
    from iugc.baseline.export import export_onnx

    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def baseline_image(onnx_model, tmp_path_factory):
    from iugc.baseline.image import BASELINE_IMAGE, build_baseline
    from iugc.evaluator.evaluate import default_cache_dir
    from iugc.sandbox.images import build_base

    engine = require_engine()
    build_base(progress=False, engine=engine)
    build_baseline(onnx_model, cache=default_cache_dir().parent, engine=engine)
    return engine, BASELINE_IMAGE


def _predicted_and_evaluated(dataset, checkpoint, challenge: str, root) -> dict:
    """`iugc baseline predict` (PyTorch) + `iugc evaluate --challenge CHALLENGE` on ``dataset``."""
    for cmd in (["baseline", "predict", "--input", str(dataset / "images"), "--output", str(root / "preds"), "--weights", str(checkpoint)],
                ["evaluate", "--predictions", str(root / "preds"), "--ground-truth", str(dataset), "--challenge", challenge,
                 "--out", str(root / "r.json"), "--no-cache", "--quiet"]):
        done = subprocess.run([sys.executable, "-m", "iugc", *cmd], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return json.loads((root / "r.json").read_text())


@pytest.fixture(scope="module")
def reference(cases, checkpoint, tmp_path_factory):
    """The same frames through `iugc baseline predict` + `iugc evaluate`."""
    return _predicted_and_evaluated(cases, checkpoint, "iugc2024", tmp_path_factory.mktemp("ref"))


def _agree(result, reference):
    assert result["status"] == "succeeded", result.get("error")
    assert result["aggregates"]["n_cases"] == reference["aggregates"]["n_cases"] == 40
    for key, tolerance in (("dice", 0.003), ("hd", 1.0), ("asd", 0.3), ("aop_error", 0.5), ("hsd_error", 0.5)):
        assert abs(result["aggregates"][key] - reference["aggregates"][key]) <= tolerance, key
    close = sum(abs(result["cases"][c]["dice_all"] - reference["cases"][c]["dice_all"]) < 0.01 for c in reference["cases"])
    assert close >= 38
    p_diff = [abs(result["cases"][c]["p_standard_plane"] - reference["cases"][c]["p_standard_plane"]) for c in reference["cases"]]
    assert max(p_diff) < 0.01


@pytest.mark.xdist_group("docker")
def test_baseline_image_agrees_with_predict_and_evaluate(baseline_image, cases, reference, tmp_path, monkeypatch):
    engine, image = baseline_image
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    result = evaluate_image(image, cases, CHALLENGE, LIMITS, engine=engine, cache_dir=None, jobs=1)
    _agree(result, reference)
    assert "predicted 40 of 40 cases" in result["logs"]


@pytest.mark.xdist_group("docker")
def test_baseline_image_is_non_root_and_has_no_pytorch(baseline_image):
    engine, image = baseline_image
    info = engine.api.inspect_image(image)
    assert info["Config"]["User"] == "10001:10001"
    out = engine.containers.run(image, entrypoint=["python3", "-c",
                                "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"],
                                network_mode="none", remove=True)
    assert out.decode().split() == ["True", "True"]


def test_local_runner_runs_the_trusted_baseline_alike(cases, reference, onnx_model, tmp_path, monkeypatch):
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("IUGC_MODEL", str(onnx_model))
    result = evaluate_image("iugc/baseline:latest", cases, CHALLENGE, LIMITS, runner="local", cache_dir=None, jobs=1)
    _agree(result, reference)
    assert list((tmp_path / "work").iterdir()) == []


def test_local_runner_refuses_untrusted_images(cases, tmp_path, monkeypatch):
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    result = evaluate_image("team/model:1", cases, CHALLENGE, LIMITS, runner="local", cache_dir=None, jobs=1)
    assert result["status"] == "failed" and result["failure"] == "image_rejected"
    assert "only the platform's trusted submissions" in result["error"] and "start a Docker engine" in result["error"]


def test_local_runner_stops_when_cancelled(cases, onnx_model, tmp_path, monkeypatch):
    import threading
    import time

    from iugc.sandbox.exceptions import CancelledError

    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("IUGC_MODEL", str(onnx_model))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    began = time.monotonic()
    with pytest.raises(CancelledError, match="cancelled"):
        evaluate_image("iugc/baseline:latest", cases, CHALLENGE, LIMITS, runner="local", cache_dir=None, jobs=1, cancel=cancel)
    assert time.monotonic() - began < 5  # a full run takes longer (imports, model load, every case)
    assert list((tmp_path / "work").iterdir()) == []


@pytest.fixture(scope="module")
def pointed_cases(cases, tmp_path_factory):
    """The same 40 frames with IUGC 2025 landmarks derived from their expert masks."""
    import shutil

    from iugc.data_manifest.landmarks import derive_landmarks

    dest = tmp_path_factory.mktemp("pointed") / "ds"
    shutil.copytree(cases, dest)
    derive_landmarks(dest, progress=False)
    return dest


@pytest.fixture(scope="module")
def landmark_reference(pointed_cases, checkpoint, tmp_path_factory):
    """`iugc baseline predict` (its landmarks.json) + `iugc evaluate --challenge iugc2025`."""
    return _predicted_and_evaluated(pointed_cases, checkpoint, "iugc2025", tmp_path_factory.mktemp("ref25"))


def _agree_on_landmarks(result, reference):
    assert result["status"] == "succeeded", result.get("error")
    n = reference["aggregates"]["n_cases"]
    assert result["aggregates"]["n_cases"] == n >= 38 and reference["aggregates"]["n_errors"] <= 2
    assert 0 < reference["aggregates"]["mre"] < 30  # the baseline's points are near the expert's
    assert abs(result["aggregates"]["mre"] - reference["aggregates"]["mre"]) <= 0.5
    assert abs(result["aggregates"]["aop_error"] - reference["aggregates"]["aop_error"]) <= 0.5
    assert result["score"] is not None


def test_local_runner_enters_the_landmark_challenge_as_predict_does(pointed_cases, landmark_reference, onnx_model, tmp_path, monkeypatch):
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("IUGC_MODEL", str(onnx_model))
    result = evaluate_image("iugc/baseline:latest", pointed_cases, load_challenge("iugc2025"), LIMITS, runner="local",
                            cache_dir=None, jobs=1)
    _agree_on_landmarks(result, landmark_reference)
    assert result["warnings"] == []  # landmarks.json alone: no mask written, nothing unexpected


@pytest.mark.xdist_group("docker")
def test_baseline_image_enters_the_landmark_challenge(baseline_image, pointed_cases, landmark_reference, tmp_path, monkeypatch):
    engine, image = baseline_image
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    result = evaluate_image(image, pointed_cases, load_challenge("iugc2025"), LIMITS, engine=engine, cache_dir=None, jobs=1)
    _agree_on_landmarks(result, landmark_reference)
