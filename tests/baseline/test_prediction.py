"""Prediction from weights: frames and clips, several weights, BatchNorm adaptation, smoothing,
old checkpoints, missing weights."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed")

from iugc.baseline.model import BaselineNet  # noqa: E402
from iugc.baseline.train import TrainConfig, train  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.baseline.support import TINY  # noqa: E402


def _to_network(frame, size):
    """What prediction feeds the network, for a frame already at the network size: an
    oracle with SciPy (the default smoothing, sigma 1, mirrored edges)."""
    from scipy.ndimage import gaussian_filter

    assert frame.shape == (size, size)
    return gaussian_filter(frame.astype(np.float32) / 255, 1.0, mode="reflect", truncate=4.0)


def test_missing_weights_give_a_clear_error(tmp_path):
    cv2.imwrite(str(tmp_path / "00001.png"), np.zeros((32, 32), np.uint8))
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                          "--weights", str(tmp_path / "nope.pt")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode != 0 and "no such checkpoint" in cli.stderr and "nope.pt" in cli.stderr



@pytest.mark.parametrize("content", ["nothing", "only unreadable frames"])
def test_a_folder_with_nothing_to_predict_is_an_error_that_writes_nothing(tmp_path, content):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "notes.txt").write_text("not a frame")
    if content == "only unreadable frames":
        (frames / "00001.png").write_bytes(b"not a png")
        (frames / "00002.png").write_bytes(b"")
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr and "predicted" not in cli.stdout
    expected = "holds no frame to predict" if content == "nothing" else "none of the 2 frames"
    assert expected in cli.stderr and str(frames) in cli.stderr
    assert not (tmp_path / "out").exists()  # no predictions.json claiming an empty result


def test_predict_reads_every_frame_of_avi_clips(dataset, tmp_path):
    from iugc.baseline.predict import predict_folder
    from iugc.data_manifest.phantom import write_phantom_iugc2024

    run = tmp_path / "run"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    raw = tmp_path / "raw"
    write_phantom_iugc2024(raw, n_videos=1, frames_per_video=3, seed=0, size=96)
    summary = predict_folder(raw / "videos", tmp_path / "out", run / "best.pt", progress=False)
    assert summary["predicted"] == 3 and not summary["errors"]
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(predictions) == ["synthetic00_0000", "synthetic00_0001", "synthetic00_0002"]
    import cv2

    assert cv2.imread(str(tmp_path / "out" / "synthetic00_0001.png"), cv2.IMREAD_UNCHANGED).shape == (96, 96)


def test_a_checkpoint_older_than_input_norm_loads_unnormalised_and_fp16_as_float(tmp_path):
    from iugc.baseline.predict import load_model, read_checkpoint

    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), input_norm="none").eval()
    config = dict(net.config)
    del config["input_norm"]  # as written before the option existed
    path = tmp_path / "old.pt"
    torch.save({"model": {k: v.half() for k, v in net.state_dict().items()}, "model_config": config, "size": 64}, path)
    state = read_checkpoint(path)
    assert state["model_config"]["input_norm"] == "none"
    assert all(v.dtype != torch.float16 for v in state["model"].values())
    loaded, size = load_model(path)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert size == 64 and torch.allclose(loaded(x)[0], net(x)[0], atol=0.05)


def test_an_ensemble_averages_its_members_probabilities():
    from iugc.baseline.predict import Ensemble

    torch.manual_seed(0)
    a = BaselineNet(encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    b = BaselineNet(encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        (ma, sa), (mb, sb) = a(x), b(x)
        masks, standard = Ensemble([a, b]).eval()(x)
    assert not torch.allclose(ma.softmax(1), mb.softmax(1), atol=1e-3)  # the members differ
    assert torch.allclose(masks.softmax(1), (ma.softmax(1) + mb.softmax(1)) / 2, atol=1e-5)
    assert torch.allclose(torch.sigmoid(standard), (torch.sigmoid(sa) + torch.sigmoid(sb)) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 networks, got 1"):
        Ensemble([a])


def test_predict_takes_several_weights_of_one_input_size(psfhs_dir, tmp_path):
    from iugc.baseline.predict import read_checkpoint

    frames = tmp_path / "frames"
    frames.mkdir()
    for case in ("04310", "04350"):
        (frames / f"{case}.png").write_bytes((psfhs_dir / "images" / f"{case}.png").read_bytes())

    def predict(out, *weights):
        args = [a for w in weights for a in ("--weights", str(w))]
        return subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output", str(out), *args],
                              capture_output=True, text=True, cwd=ROOT)

    assert predict(tmp_path / "one", "default").returncode == 0
    run = predict(tmp_path / "two", "default", "default")
    assert run.returncode == 0, run.stderr
    one, two = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("one", "two"))
    for case in one:  # two copies of one network average to that network
        assert two[case]["p_standard_plane"] == pytest.approx(one[case]["p_standard_plane"], abs=1e-5)
        a, b = (cv2.imread(str(tmp_path / d / f"{case}.png"), cv2.IMREAD_UNCHANGED) for d in ("one", "two"))
        assert (a == b).mean() > 0.999
    state = read_checkpoint("default")
    state["size"] = 128
    torch.save(state, tmp_path / "small.pt")
    run = predict(tmp_path / "mixed", "default", tmp_path / "small.pt")
    assert run.returncode != 0 and "must share one input size" in run.stderr and "small.pt: 128" in run.stderr
    assert not (tmp_path / "mixed" / "predictions.json").exists()


def test_batchnorm_adaptation_takes_the_statistics_of_the_new_frames(psfhs_dir):
    from iugc.baseline.predict import adapt_batchnorm, load_model

    model, size = load_model("default")
    frames = [cv2.imread(str(psfhs_dir / "images" / f"{4302 + i:05d}.png"), cv2.IMREAD_GRAYSCALE) for i in range(10)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adapt_batchnorm(model, frames, size, batch_size=16)  # one batch: the statistics are the frames'
    seen = []
    hook = model.net.encoder.conv1.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():  # an oracle: what the first BatchNorm receives, from the unadapted network
        model(torch.stack([torch.from_numpy(_to_network(f, size))[None] for f in frames]))
    hook.remove()
    features = seen[0].transpose(0, 1).flatten(1)  # (channels, N * H * W)
    bn = adapted.net.encoder.bn1
    assert torch.allclose(bn.running_mean, features.mean(1), atol=1e-4)
    assert torch.allclose(bn.running_var, features.var(1, unbiased=True), rtol=1e-3, atol=1e-5)
    assert not torch.allclose(bn.running_mean, before["net.encoder.bn1.running_mean"], rtol=0.1, atol=0)
    for key, value in model.state_dict().items():  # the shipped model itself is untouched
        assert torch.equal(value, before[key]), key
    for key, value in adapted.state_dict().items():  # and only statistics changed in the copy
        if "running_" not in key and "num_batches" not in key:
            assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="at least 8 frames to estimate statistics, got 3"):
        adapt_batchnorm(model, frames[:3], size)


def test_predict_smooths_by_default_and_not_with_smooth_0(psfhs_dir, tmp_path):
    from iugc.baseline.predict import load_model, predict_frame

    frames = tmp_path / "frames"
    frames.mkdir()
    cases = ["04310", "04360"]  # the second scanner, where smoothing matters
    for case in cases:
        (frames / f"{case}.png").write_bytes((psfhs_dir / "images" / f"{case}.png").read_bytes())
    model, size = load_model("default")
    differs = 0
    for flags, out, smooth in (([], "smoothed", 1.0), (["--smooth", "0"], "plain", 0.0)):
        run = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output",
                              str(tmp_path / out), *flags], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        for case in cases:
            image = cv2.imread(str(frames / f"{case}.png"), cv2.IMREAD_GRAYSCALE)
            written = cv2.imread(str(tmp_path / out / f"{case}.png"), cv2.IMREAD_UNCHANGED)
            assert (written == predict_frame(model, size, image, smooth=smooth)[0]).mean() > 0.999, (case, out)
    for case in cases:
        differs += int((cv2.imread(str(tmp_path / "smoothed" / f"{case}.png"), cv2.IMREAD_UNCHANGED)
                        != cv2.imread(str(tmp_path / "plain" / f"{case}.png"), cv2.IMREAD_UNCHANGED)).sum())
    assert differs > 0, "smoothing changed no pixel"
    bad = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output",
                          str(tmp_path / "bad"), "--smooth", "-1"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "--smooth" in bad.stderr and not (tmp_path / "bad").exists()


def test_predict_adapt_bn_predicts_with_the_folders_statistics(psfhs_dir, tmp_path):
    from iugc.baseline.predict import adapt_batchnorm, load_model, predict_frame

    frames = tmp_path / "frames"
    frames.mkdir()
    cases = [f"{4330 + i:05d}" for i in range(9)]
    for case in cases:
        (frames / f"{case}.png").write_bytes((psfhs_dir / "images" / f"{case}.png").read_bytes())
    run = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output",
                          str(tmp_path / "out"), "--adapt-bn"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    model, size = load_model("default")
    images = [cv2.imread(str(frames / f"{case}.png"), cv2.IMREAD_GRAYSCALE) for case in cases]
    adapted = adapt_batchnorm(model, images, size)
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    differs = 0
    for case, image in zip(cases, images):
        mask, p = predict_frame(adapted, size, image)
        written = cv2.imread(str(tmp_path / "out" / f"{case}.png"), cv2.IMREAD_UNCHANGED)
        assert (written == mask).mean() > 0.999 and predictions[case]["p_standard_plane"] == pytest.approx(p, abs=1e-5)
        differs += int((predict_frame(model, size, image)[0] != mask).sum())
    assert differs > 0, "the adapted network predicted exactly as the shipped one"
    for case in cases[3:]:
        (frames / f"{case}.png").unlink()
    run = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output",
                          str(tmp_path / "few"), "--adapt-bn"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0 and "at least 8 frames" in run.stderr and "got 3" in run.stderr
    assert not (tmp_path / "few").exists()
