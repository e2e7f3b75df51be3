"""Exported weights: ONNX agreeing with PyTorch, fp16 and int8 release files, and export
never replacing a file without --force."""
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed")

from iugc.baseline.model import BaselineNet  # noqa: E402
from iugc.baseline.train import TrainConfig, train  # noqa: E402
from iugc.data_manifest.manifest import load_manifest  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.baseline.support import TINY  # noqa: E402


def test_onnx_export_agrees_with_pytorch_without_importing_torch(dataset, tmp_path):
    from iugc.baseline.predict import load_model, predict_frame
    from iugc.data_manifest.io import read_image

    run = tmp_path / "run"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "export", "--format", "onnx", "--weights", str(run / "best.pt"),
                          "--out", str(tmp_path / "m.onnx")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    model, size = load_model(run / "best.pt")
    validation = [c for c in load_manifest(dataset).cases if c.split == "validation"]
    frames = [read_image(dataset / c.image) for c in validation]
    script = (
        "import sys, json, numpy as np, cv2\n"
        "from iugc.baseline.onnx_predict import OnnxPredictor\n"
        f"p = OnnxPredictor({str(tmp_path / 'm.onnx')!r})\n"
        f"frames = [cv2.imread(f, cv2.IMREAD_UNCHANGED) for f in {[str(dataset / c.image) for c in validation]!r}]\n"
        "out = p.predict_batch(frames)\n"
        f"np.save({str(tmp_path / 'masks.npy')!r}, np.stack([m for m, _ in out]))\n"
        "print(json.dumps({'torch_loaded': 'torch' in sys.modules, 'p': [q for _, q in out]}))\n"
    )
    ort_run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert ort_run.returncode == 0, ort_run.stderr
    report = json.loads(ort_run.stdout)
    assert report["torch_loaded"] is False
    onnx_masks = np.load(tmp_path / "masks.npy")
    agree, total = 0, 0
    for frame, onnx_mask, p_onnx in zip(frames, onnx_masks, report["p"]):
        mask, p = predict_frame(model, size, frame)
        agree += int((mask == onnx_mask).sum())
        total += mask.size
        assert p == pytest.approx(p_onnx, abs=1e-4)
    assert agree / total >= 0.999


def test_fp16_release_weights_are_smaller_and_predict_alike(tmp_path):
    from iugc.baseline.export import export_release
    from iugc.baseline.predict import load_model

    torch.manual_seed(0)
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(32, 16, 8)).eval()
    full = tmp_path / "full.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config, "size": 64, "epoch": 3,
                "optimizer": {"junk": torch.zeros(10000)}}, full)
    release = export_release(full, tmp_path / "release.pt")
    assert release.stat().st_size < 0.6 * full.stat().st_size
    state = torch.load(release, weights_only=False)
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    assert "optimizer" not in state and state["size"] == 64
    a, _ = load_model(full)
    b, size = load_model(release)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        (ma, sa), (mb, sb) = a(x), b(x)
    assert size == 64 and b.training is False
    assert (ma.argmax(1) == mb.argmax(1)).float().mean() > 0.99
    assert torch.allclose(sa, sb, atol=1e-2)


def test_int8_release_weights_are_a_quarter_of_float32_and_predict_alike(tmp_path):
    from iugc.baseline.export import export_release, quantize_int8
    from iugc.baseline.predict import load_model

    weight = torch.randn(8, 4, 3, 3)
    q, scale = quantize_int8(weight)
    assert q.dtype == torch.int8 and scale.shape == (8,)
    assert (q.float() * scale[:, None, None, None] - weight).abs().max() <= scale.max() / 2 + 1e-6

    torch.manual_seed(0)
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(32, 16, 8)).eval()
    full = tmp_path / "full.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config, "size": 64, "epoch": 3}, full)
    release = export_release(full, tmp_path / "release.pt", precision="int8")
    assert release.stat().st_size < 0.3 * full.stat().st_size
    a, _ = load_model(full)
    b, size = load_model(release)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        (ma, sa), (mb, sb) = a(x), b(x)
    assert size == 64 and (ma.argmax(1) == mb.argmax(1)).float().mean() > 0.99
    assert torch.allclose(sa, sb, rtol=0.01, atol=0.02)
    for precision in ("fp16", "int8"):  # release weights re-export to what they hold, not their raw int8
        again, _ = load_model(export_release(release, tmp_path / f"again-{precision}.pt", precision=precision))
        with torch.no_grad():
            mc, sc = again(x)
        assert (mc.argmax(1) == mb.argmax(1)).float().mean() > 0.99 and torch.allclose(sc, sb, rtol=0.01, atol=0.02)
    with pytest.raises(ValueError, match="'fp16' or 'int8'"):
        export_release(full, tmp_path / "x.pt", precision="int4")


def test_export_never_replaces_a_file_without_force_and_finetune_refuses_architecture_options(dataset, tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    target = tmp_path / "weights.pt"
    target.write_bytes(b"precious")
    export = [sys.executable, "-m", "iugc", "baseline", "export", "--format", "int8", "--weights", str(run / "best.pt"), "--out", str(target)]
    refused = subprocess.run(export, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0 and "exists" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert target.read_bytes() == b"precious"
    forced = subprocess.run([*export, "--force"], capture_output=True, text=True, cwd=ROOT)
    assert forced.returncode == 0, forced.stderr
    assert target.read_bytes() != b"precious"
    for option in (["--encoder", "resnet34"], ["--size", "128"]):
        cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "finetune", "--from", str(run / "best.pt"), "--data", str(dataset),
                              "--out", str(tmp_path / "ft"), *option], capture_output=True, text=True, cwd=ROOT)
        assert cli.returncode == 2 and f"No such option '{option[0]}'" in cli.stderr, cli.stderr
    assert not (tmp_path / "ft").exists()
