"""Bad input gets one line saying what was wrong and what to do, a non-zero exit and
nothing left behind, never a traceback (issue 19, item 8)."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from iugc.data_manifest.importers import import_dataset
from tests.conftest import ROOT, link_frames


def iugc(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "iugc", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def one_clear_line(run, *words):
    """Exit non-zero, no traceback, and the last stderr line says each of ``words``."""
    assert run.returncode not in (0, 130), (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, run.stderr
    return last


@pytest.fixture(scope="module")
def small(psfhs_dir, tmp_path_factory):
    """Four real frames as an unsplit dataset, and perfect predictions of them."""
    root = tmp_path_factory.mktemp("small")
    import_dataset("png", link_frames(root / "source", limit=4), root / "ds", progress=False)
    return root


def test_evaluate_out_naming_a_folder_is_refused_before_scoring(small, tmp_path):
    run = iugc("evaluate", "--predictions", small / "ds" / "masks", "--ground-truth", small / "ds", "--challenge", "psfhs2023",
               "--out", tmp_path)
    one_clear_line(run, "is a folder", "result.json")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_image_out_naming_a_folder_is_refused(small, tmp_path):
    run = iugc("evaluate-image", "--image", "baseline", "--runner", "local", "--data", small / "ds", "--challenge", "psfhs2023",
               "--out", tmp_path)
    one_clear_line(run, "is a folder")


def test_predictions_naming_a_file_says_so(small, tmp_path):
    not_a_folder = tmp_path / "preds.png"
    not_a_folder.write_bytes(b"x")
    run = iugc("evaluate", "--predictions", not_a_folder, "--ground-truth", small / "ds", "--challenge", "psfhs2023",
               "--out", tmp_path / "r.json")
    last = one_clear_line(run, "is a file, not a folder")
    assert "does not exist" not in last and not (tmp_path / "r.json").exists()


def test_a_missing_challenge_file_is_not_found_rather_than_unknown(small, tmp_path):
    run = iugc("evaluate", "--predictions", small / "ds" / "masks", "--ground-truth", small / "ds",
               "--challenge", tmp_path / "missing.yaml", "--out", tmp_path / "r.json")
    last = one_clear_line(run, "file not found", "missing.yaml")
    assert "unknown challenge" not in last
    named = iugc("challenge", "show", "nope")  # a name that is no shipped challenge stays "unknown"
    one_clear_line(named, "unknown challenge")


def test_opencv_log_lines_do_not_leak(small, tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    for path in sorted((small / "ds" / "masks").glob("*.png")):
        (preds / path.name).write_bytes(path.read_bytes())
    broken = sorted(preds.glob("*.png"))[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)  # a PNG signature, then garbage: OpenCV warns
    run = iugc("evaluate", "--predictions", preds, "--ground-truth", small / "ds", "--challenge", "psfhs2023",
               "--out", tmp_path / "r.json", "--quiet", "--no-cache")
    assert run.returncode == 0, run.stderr
    assert f"case {broken.stem}: invalid prediction" in run.stderr
    assert "[ WARN" not in run.stderr and "[ERROR" not in run.stderr, run.stderr


def test_a_truncated_clip_leaks_no_ffmpeg_lines(tmp_path):
    pytest.importorskip("torch")
    size = 64
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size), False)
    rng = np.random.default_rng(0)
    for _ in range(4):
        writer.write(rng.integers(0, 255, (size, size), dtype=np.uint8))
    writer.release()
    frames = tmp_path / "frames"
    frames.mkdir()
    data = (tmp_path / "clip.avi").read_bytes()
    (frames / "clip.avi").write_bytes(data[: len(data) * 2 // 3])
    run = iugc("baseline", "predict", "--input", frames, "--output", tmp_path / "preds")
    assert run.returncode == 0, run.stderr
    assert "@ 0x" not in run.stderr and "overread" not in run.stderr and "[ WARN" not in run.stderr, run.stderr


def test_predict_with_a_file_that_is_no_checkpoint(small, tmp_path):
    pytest.importorskip("torch")
    bogus = tmp_path / "not-a-checkpoint.json"
    bogus.write_text('{"weights": []}')
    run = iugc("baseline", "predict", "--input", small / "ds" / "images", "--output", tmp_path / "preds", "--weights", bogus)
    one_clear_line(run, "not-a-checkpoint.json", "not a checkpoint", "default")
    assert not (tmp_path / "preds").exists()


def test_cuda_without_a_gpu_is_one_line(small, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    run = iugc("baseline", "predict", "--input", small / "ds" / "images", "--output", tmp_path / "preds", "--device", "cuda")
    one_clear_line(run, "no CUDA GPU", "--device cpu")
    assert not (tmp_path / "preds").exists()
    train = iugc("baseline", "train", "--data", small / "ds", "--out", tmp_path / "run", "--device", "cuda")
    one_clear_line(train, "no CUDA GPU")
    assert not (tmp_path / "run").exists()


def test_train_on_an_unsplit_or_missing_dataset(small, tmp_path):
    pytest.importorskip("torch")
    unsplit = iugc("baseline", "train", "--data", small / "ds", "--out", tmp_path / "run", "--epochs", "1")
    one_clear_line(unsplit, "no train and no validation cases", "unassigned 4", "iugc data split")
    missing = iugc("baseline", "train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", "--epochs", "1")
    one_clear_line(missing, "no manifest", "iugc data import")
    assert not (tmp_path / "run").exists()
