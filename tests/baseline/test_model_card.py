"""The shipped baseline weights: what the model card says about them is true."""
import hashlib
import importlib.util
import json

import pytest

from tests.conftest import ROOT

WEIGHTS = ROOT / "baseline" / "weights"
META = json.loads((WEIGHTS / "baseline.json").read_text())


def _card_module():
    spec = importlib.util.spec_from_file_location("baseline_card", ROOT / "benchmarks" / "baseline_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_match_their_checksum_and_size_limit():
    data = (WEIGHTS / META["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == META["sha256"]
    assert len(data) == META["bytes"] <= 16 * 2**20


def test_weights_are_stored_compactly_and_load_as_a_model():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    from iugc.baseline.predict import load_model

    state = torch.load(WEIGHTS / META["file"], map_location="cpu", weights_only=False)
    stored = {str(v.dtype) for v in state["model"].values() if v.is_floating_point() or v.dtype == torch.int8}
    expected = {"fp16": {"torch.float16"}, "int8": {"torch.float16", "torch.int8"}}[META["precision"]]
    assert stored == expected
    assert set(state.get("int8_scales", {})) == {k for k, v in state["model"].items() if v.dtype == torch.int8}
    model, size = load_model("default")
    assert size == state["size"] and not model.training


def test_model_card_is_rendered_from_the_figures():
    assert (WEIGHTS / "MODEL_CARD.md").read_text() == _card_module().render_card(META)


def test_model_card_notes_each_say_one_thing_once():
    topics = [note.split("(")[0].split(":")[0].strip() for note in META["notes"]]
    assert len(set(META["notes"])) == len(META["notes"])
    assert [t for t in topics if topics.count(t) > 1 and not t.startswith("Measured")] == []


def test_shipped_weights_reproduce_the_card_through_predict_and_evaluate(psfhs_dir, tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    card = _card_module()
    name = list(card.VARIANTS)[0]
    measured = card.figures(tmp_path, "default", card.VARIANTS[name], name)
    assert set(measured) == set(META["shipped_on_validation"]) == {"pooled", "first scanner", "second scanner"}
    assert [measured[g]["n_real"] for g in ("pooled", "first scanner", "second scanner")] == [154, 96, 58]
    for group, recorded in META["shipped_on_validation"].items():
        for key in card.KEYS:
            if recorded[key] is None:
                assert measured[group][key] is None, (group, key)
            else:
                assert measured[group][key] == pytest.approx(recorded[key], abs=1e-6), (group, key)


def test_the_card_summary_quotes_the_held_out_figures_per_scanner_and_pooled():
    text = (WEIGHTS / "MODEL_CARD.md").read_text()
    summary = text[: text.index("## Training")]
    default = next(iter(META["held_out"]["variants"].values()))
    for group, figures in default.items():
        row = next(line for line in summary.splitlines() if line.startswith(f"| {group} "))
        assert f"{figures['dice_all']:.4f}" in row and f"{figures['psfhs_score']:.4f}" in row
    assert "iugc baseline train" in summary and "--refit" in summary


def test_onnx_export_of_the_shipped_weights_agrees_on_the_validation_block(psfhs_dir, tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    from iugc.baseline.export import export_onnx
    from iugc.baseline.onnx_predict import OnnxPredictor
    from iugc.baseline.predict import load_model, predict_frame
    from iugc.data_manifest.io import read_image

    model, size = load_model("default")
    predictor = OnnxPredictor(export_onnx("default", tmp_path / "m.onnx"), threads=2)
    agree = total = 0
    for case_id in range(4301, 4402):
        frame = read_image(psfhs_dir / "images" / f"{case_id:05d}.png")
        mask, p = predict_frame(model, size, frame)
        onnx_mask, onnx_p = predictor.predict(frame)
        agree += int((mask == onnx_mask).sum())
        total += mask.size
        assert abs(p - onnx_p) < 1e-3, case_id
    assert agree / total >= 0.999


def _iugc(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "iugc", *args], capture_output=True, text=True, cwd=ROOT)


def test_predict_and_finetune_start_from_the_shipped_weights_by_default(psfhs_dir, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    from iugc.data_manifest.importers import import_dataset
    from iugc.data_manifest.manifest import load_manifest, write_manifest
    from iugc.data_manifest.split import split_by_blocks

    data = tmp_path / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", data, progress=False)
    write_manifest(data, split_by_blocks(load_manifest(data), {"train": [("03744", "03755")], "validation": [("03756", "03759")]}, allow_unassigned=True))
    predicted = _iugc("baseline", "predict", "--input", str(data / "images"), "--output", str(tmp_path / "p"))
    assert predicted.returncode == 0, predicted.stderr
    assert len(json.loads((tmp_path / "p" / "predictions.json").read_text())) == 40
    tuned = _iugc("baseline", "finetune", "--from", "default", "--data", str(data), "--out", str(tmp_path / "ft"),
                  "--epochs", "1", "--freeze-encoder")
    assert tuned.returncode == 0, tuned.stderr
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    shipped = torch.load(WEIGHTS / META["file"], map_location="cpu", weights_only=False)
    assert config["encoder_name"] == shipped["model_config"]["encoder_name"] and config["size"] == shipped["size"]
