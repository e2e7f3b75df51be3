"""Training, resuming, fine-tuning and refitting on a few real frames, one short epoch, on CPU."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed")

from iugc.baseline.model import BaselineNet  # noqa: E402
from iugc.baseline.data import FrameDataset  # noqa: E402
from iugc.baseline.frames import SMOOTH  # noqa: E402
from iugc.baseline.predict import load_model  # noqa: E402
from iugc.baseline.train import TrainConfig, train, validate  # noqa: E402
from iugc.data_manifest.manifest import load_manifest  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.baseline.support import TINY, log_rows  # noqa: E402


def _one_epoch_weights(dataset, out, **options) -> dict:
    """The state dict after one epoch of the TINY network trained into ``out``."""
    train(TrainConfig(data=str(dataset), out=str(out), epochs=1, **TINY, **options), progress=False)
    return torch.load(out / "last.pt", weights_only=False)["model"]


def test_train_one_epoch_resume_and_predict(dataset, tmp_path):
    run = tmp_path / "run"
    best = train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    rows = log_rows(run / "log.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert 0 <= float(rows[0]["dice"]) <= 1 and float(rows[0]["psfhs_score"]) == pytest.approx(best["psfhs_score"])
    assert (run / "curves.png").stat().st_size > 1000 and (run / "best.pt").is_file()
    # resume: a second call for 2 epochs runs only epoch 2 and keeps epoch 1's row
    train(TrainConfig(data=str(dataset), out=str(run), epochs=2, resume=True, **TINY), progress=False)
    rows = log_rows(run / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    frames = dataset / "images"
    out = tmp_path / "pred"
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(frames), "--output", str(out),
                          "--weights", str(run / "best.pt")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions) == {p.stem for p in frames.glob("*.png")}
    import cv2

    first = sorted(frames.glob("*.png"))[0]
    mask = cv2.imread(str(out / first.name), cv2.IMREAD_UNCHANGED)
    assert mask.shape == cv2.imread(str(first), cv2.IMREAD_UNCHANGED).shape[:2]
    assert set(np.unique(mask).tolist()) <= {0, 1, 2}
    assert all(0 <= v["p_standard_plane"] <= 1 for v in predictions.values())


def test_validation_during_training_scores_what_predict_will_write(dataset, tmp_path):
    from iugc.baseline.predict import load_model, predict_frame
    from iugc.challenge.definition import load_challenge
    from iugc.data_manifest.io import read_image, read_mask
    from iugc.evaluator.scores import CaseTable, aggregate, segmentation_values

    run = tmp_path / "run"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=2, ema_decay=0, **TINY), progress=False)
    logged = [float(r["dice"]) for r in log_rows(run / "log.csv")]
    model, size = load_model(run / "best.pt")
    best_epoch = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["epoch"]
    cases = [c for c in load_manifest(dataset).cases if c.split == "validation" and c.mask]
    psfhs = load_challenge("psfhs2023")

    def mean_dice(smooth):
        values = {c.case_id: segmentation_values(predict_frame(model, size, read_image(dataset / c.image), smooth=smooth)[0],
                                                 read_mask(dataset / c.mask)) for c in cases}
        return aggregate(CaseTable.from_cases(values), psfhs)["dice"]

    default, plain = mean_dice(1.0), mean_dice(0.0)
    assert default != pytest.approx(plain, abs=1e-4), "smoothing made no difference: the check below could not fail"
    assert logged[best_epoch] == pytest.approx(default, abs=1e-6)


def test_finetune_from_a_checkpoint_with_a_frozen_encoder(dataset, tmp_path):
    run = tmp_path / "a"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    before = torch.load(run / "best.pt", weights_only=False)["model"]
    tuned = tmp_path / "b"
    train(TrainConfig(data=str(dataset), out=str(tuned), epochs=1, init_from=str(run / "best.pt"), freeze_encoder=True, **TINY), progress=False)
    after = torch.load(tuned / "last.pt", weights_only=False)["model"]
    trained = torch.load(tuned / "last.pt", weights_only=False)["training_model"]
    encoder = [k for k in before if k.startswith("net.encoder.") and before[k].is_floating_point()]
    decoder = [k for k in before if k.startswith("net.decoder.") and before[k].is_floating_point() and "running" not in k]
    assert any("running_mean" in k for k in encoder)
    # weights and BatchNorm statistics alike: a frozen encoder keeps what it was trained with
    assert all(torch.equal(before[k], after[k]) and torch.equal(before[k], trained[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    decoder_stats = [k for k in decoder if k.replace("weight", "running_mean") in before and k.endswith("weight")]
    assert any(not torch.equal(before[k.replace("weight", "running_mean")], trained[k.replace("weight", "running_mean")])
               for k in decoder_stats), "the decoder's BatchNorm statistics did not move: the check above could not fail"


def test_a_checkpoint_restores_everything_a_run_changes_the_gradient_scaler_too(dataset, tmp_path):
    from iugc.baseline.train import Run, build_run, load_checkpoint, save_checkpoint

    config = TrainConfig(data=str(dataset), out=str(tmp_path), epochs=3, **TINY)
    run = build_run(config, None)
    run.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)  # what a CUDA --amp run holds
    loss = sum(p.sum() for p in run.model.parameters())
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()  # the scale grows to 2048 after one clean step
    run.average.update(run.model)
    run.scheduler.step()
    run.rows, run.best = [{"epoch": 1}], {"psfhs_score": 0.5, "epoch": 1}
    save_checkpoint(run, config, 0, tmp_path / "last.pt")
    fresh = build_run(config, None)
    fresh.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    load_checkpoint(fresh, tmp_path / "last.pt", "cpu")
    assert isinstance(fresh, Run) and fresh.scaler.get_scale() == run.scaler.get_scale() == 2048.0
    assert fresh.next_epoch == 1 and fresh.rows == run.rows and fresh.best == run.best
    assert fresh.average.steps == 1 and fresh.scheduler.get_last_lr() == run.scheduler.get_last_lr()
    assert fresh.optimizer.state_dict()["state"].keys() == run.optimizer.state_dict()["state"].keys()
    for key, value in run.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[key], value), key


def test_same_seed_retrains_to_the_same_validation_dice(dataset, tmp_path):
    first = train(TrainConfig(data=str(dataset), out=str(tmp_path / "a"), epochs=1, seed=3, **TINY), progress=False)
    second = train(TrainConfig(data=str(dataset), out=str(tmp_path / "b"), epochs=1, seed=3, **TINY), progress=False)
    assert abs(first["dice"] - second["dice"]) <= 0.01


def test_finetune_cli_keeps_the_checkpoint_architecture(dataset, tmp_path):
    run = tmp_path / "a"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "finetune", "--from", str(run / "best.pt"), "--data", str(dataset),
                          "--out", str(tmp_path / "b"), "--epochs", "1", "--batch-size", "8"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (config["encoder_name"], config["decoder_channels"], config["size"]) == ("resnet18", [32, 16, 8], 64)
    missing = subprocess.run([sys.executable, "-m", "iugc", "baseline", "finetune", "--from", str(tmp_path / "nope.pt"),
                              "--data", str(dataset), "--out", str(tmp_path / "c")], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "nope.pt: no such checkpoint" in missing.stderr


def test_weight_average_follows_the_weights_and_survives_a_resume(dataset, tmp_path):
    from iugc.baseline.train import WeightAverage

    torch.manual_seed(0)
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    raw = WeightAverage(net, decay=0.0)
    slow = WeightAverage(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    raw.update(net)
    slow.update(net)  # warm-up: decay min(0.9, 2/11) on the first step
    for key, value in net.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(raw.model.state_dict()[key], value)
            assert torch.allclose(slow.model.state_dict()[key], start[key] + (value - start[key]) * (1 - 2 / 11), atol=1e-5)


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(dataset, tmp_path):
    import signal
    import time

    config = dict(TINY, epochs=3)
    straight = train(TrainConfig(data=str(dataset), out=str(tmp_path / "a"), **config), progress=False)
    args = ", ".join(f"{k}={v!r}" for k, v in config.items())
    script = ("from iugc.baseline.train import TrainConfig, train\n"
              f"train(TrainConfig(data={str(dataset)!r}, out={str(tmp_path / 'b')!r}, {args}), progress=False)\n")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    last = tmp_path / "b" / "last.pt"
    while not last.exists() and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # mid-epoch 2: only epoch 1 is saved
    child.wait()
    killed_at = torch.load(last, weights_only=False)["epoch"]
    assert killed_at < 2, "the run finished before the kill; nothing was resumed"
    resumed = train(TrainConfig(data=str(dataset), out=str(tmp_path / "b"), resume=True, **config), progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["average_steps"] == b["average_steps"] > 0
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-4), key
    assert straight["dice"] == pytest.approx(resumed["dice"], abs=1e-3)
    assert [r["epoch"] for r in log_rows(tmp_path / "b" / "log.csv")] == ["1", "2", "3"]


def test_data_loader_workers_change_nothing_but_the_speed(dataset, tmp_path):
    a = _one_epoch_weights(dataset, tmp_path / "main", seed=5)
    b = _one_epoch_weights(dataset, tmp_path / "workers", seed=5, workers=2)
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_validation_every_n_epochs_and_after_the_last(dataset, tmp_path):
    best = train(TrainConfig(data=str(dataset), out=str(tmp_path / "run"), epochs=3, val_every=2, **TINY), progress=False)
    rows = log_rows(tmp_path / "run" / "log.csv")
    assert [bool(r["dice"]) for r in rows] == [False, True, True]
    assert all(r["train_loss"] for r in rows)
    assert best["epoch"] in (2, 3)
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=False)["epoch"] + 1 == best["epoch"]
    with pytest.raises(ValueError, match="--val-every must be at least 1, got 0"):
        train(TrainConfig(data=str(dataset), out=str(tmp_path / "bad"), epochs=1, val_every=0, **TINY), progress=False)
    assert not (tmp_path / "bad").exists()


def test_style_noise_trains_differently_and_leaves_the_checkpoint_alone(dataset, tmp_path):
    from iugc.baseline.model import add_style_noise

    a = _one_epoch_weights(dataset, tmp_path / "plain", seed=3)
    b = _one_epoch_weights(dataset, tmp_path / "noisy", seed=3, style_noise=1.0)
    assert a.keys() == b.keys()  # no new parameters or buffers
    assert any(not torch.allclose(a[k].float(), b[k].float()) for k in a)  # the noise changed what was learnt
    net = BaselineNet(TINY["encoder_name"], encoder_depth=3, decoder_channels=tuple(TINY["decoder_channels"]))
    net.load_state_dict(b)
    with pytest.raises(ValueError, match="needs a ResNet encoder.*mobilenet_v2 has no"):
        add_style_noise(BaselineNet("mobilenet_v2", encoder_depth=3, decoder_channels=(32, 16, 8)), 0.5)
    bad = {"style_noise": 1.5, "encoder_name": "resnet18"}, {"style_noise": 0.5, "encoder_name": "mobilenet_v2"}
    for number, options in enumerate(bad):
        with pytest.raises(ValueError, match="probability must be in \\[0, 1\\], got 1.5|needs a ResNet encoder"):
            train(TrainConfig(data=str(dataset), out=str(tmp_path / f"bad{number}"), epochs=1, **{**TINY, **options}), progress=False)
        assert not (tmp_path / f"bad{number}").exists()  # refused before anything was written


def test_amp_on_cpu_trains_in_bfloat16_along_the_float32_path(dataset, tmp_path, monkeypatch):
    import iugc.baseline.train as training

    seed_config = TrainConfig(data=str(dataset), out="unused", seed=4, **TINY)
    training.seed_everything(4)
    start = training.build_model(seed_config).state_dict()  # what train() starts from with this seed
    plain = _one_epoch_weights(dataset, tmp_path / "fp32", seed=4)
    mixed = _one_epoch_weights(dataset, tmp_path / "bf16", seed=4, amp=True)
    moved = differ = 0.0
    for key, value in plain.items():
        if value.is_floating_point() and "num_batches" not in key:
            moved += float((value - start[key]).abs().sum())
            differ += float((mixed[key] - value).abs().sum())
    assert differ > 0  # bfloat16 was used: the arithmetic is not float32's
    assert differ < 0.3 * moved, (differ, moved)  # yet it follows float32's path (0.16 measured)

    monkeypatch.setattr(training, "cpu_has_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16.*leave --amp off"):  # warned before any epoch runs
        train(TrainConfig(data=str(dataset), out=str(tmp_path / "slow"), epochs=0, amp=True, **TINY), progress=False)


def test_a_finetune_that_only_hurts_keeps_the_starting_weights(dataset, tmp_path):
    run = tmp_path / "a"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    start = torch.load(run / "best.pt", weights_only=False)["model"]
    tuned = tmp_path / "b"
    # a learning rate no network survives: the epoch can only hurt
    best = train(TrainConfig(data=str(dataset), out=str(tuned), epochs=1, lr=5.0, ema_decay=0, init_from=str(run / "best.pt"), **TINY),
                 progress=False)
    rows = log_rows(tuned / "log.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0]["train_loss"] == ""
    measured = validate(load_model(run / "best.pt")[0], FrameDataset(dataset, ("validation",), 64, smooth=SMOOTH), "cpu")
    assert float(rows[0]["psfhs_score"]) == pytest.approx(measured["psfhs_score"], abs=1e-9)
    hurt = float(rows[1]["psfhs_score"])
    assert not hurt >= float(rows[0]["psfhs_score"]), "the destructive epoch did not hurt: the check below could not fail"
    kept = torch.load(tuned / "best.pt", weights_only=False)["model"]
    assert best["epoch"] == 0 and all(torch.equal(start[k], kept[k]) for k in start)
    changed = torch.load(tuned / "last.pt", weights_only=False)["model"]
    assert any(not torch.equal(start[k], changed[k]) for k in start if start[k].is_floating_point())


def test_warmup_raises_the_learning_rate_linearly_then_follows_the_cosine(dataset, tmp_path):
    config = TrainConfig(data=str(dataset), out=str(tmp_path / "w"), epochs=3, lr=1e-3, warmup_epochs=2, **TINY)
    train(config, progress=False)
    lrs = [float(r["lr"]) for r in log_rows(tmp_path / "w" / "log.csv")]
    steps = -(-len(FrameDataset(dataset, ("train",), 64)) // TINY["batch_size"])
    cosine = [1e-3 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    # epoch e's first step is global step e * steps; the warm-up spans 2 * steps steps
    assert lrs[0] == pytest.approx(cosine[0] * 1 / (2 * steps + 1))
    assert lrs[1] == pytest.approx(cosine[1] * (steps + 1) / (2 * steps + 1))
    assert lrs[2] == pytest.approx(cosine[2])


def test_refit_trains_on_every_split_without_validation_and_keeps_the_last_average(dataset, tmp_path):
    out = tmp_path / "refit"
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "train", "--data", str(dataset), "--out", str(out), "--epochs", "2",
                          "--refit", "--size", "64", "--decoder-channels", "32,16,8", "--batch-size", "8"],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    assert "weight average after epoch 2" in cli.stdout
    rows = log_rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["psfhs_score"] == "" and r["dice"] == "" for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["train_splits"] == ["train", "validation"] and config["val_splits"] == []
    best = torch.load(out / "best.pt", weights_only=False)
    last = torch.load(out / "last.pt", weights_only=False)
    assert best["epoch"] == 1 and all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    # every frame of both splits is a training frame: the batches cover train + validation
    n_all = sum(c.split in ("train", "validation") for c in load_manifest(dataset).cases)
    n_train = sum(c.split == "train" for c in load_manifest(dataset).cases)
    assert len(FrameDataset(dataset, tuple(config["train_splits"]), 64)) == n_all > n_train


def test_training_selects_epochs_with_undefined_truth_angles_left_out(dataset, tmp_path):
    """Generated non-standard frames have no truth AoP: validation leaves them out of the
    angle's mean (psfhs2023's count-as-zero rule is for real standard planes)."""
    from iugc.baseline.predict import predict_frame
    from iugc.challenge.biometry import biometry
    from iugc.data_manifest.io import read_image, read_mask

    run = tmp_path / "run"
    train(TrainConfig(data=str(dataset), out=str(run), epochs=1, **TINY), progress=False)
    model, size = load_model(run / "best.pt")
    cases = [c for c in load_manifest(dataset).cases if c.split == "validation" and c.mask]
    errors, undefined = [], 0
    for case in cases:
        truth = biometry(read_mask(dataset / case.mask), "ellipse").aop
        if truth is None:
            undefined += 1
            continue
        pred = biometry(predict_frame(model, size, read_image(dataset / case.image), smooth=SMOOTH)[0], "ellipse").aop
        errors.append(180.0 if pred is None else abs(pred - truth))
    assert undefined >= 1, "no validation frame lacks a truth angle: the check below could not fail"
    figures = validate(model, FrameDataset(dataset, ("validation",), size, smooth=SMOOTH), "cpu")
    assert figures["aop_error_ellipse"] == pytest.approx(np.mean(errors), abs=1e-6)


def test_progressive_resizing_trains_the_first_epochs_smaller_and_validates_at_the_full_size(dataset, tmp_path, monkeypatch):
    from iugc.baseline import train as training

    seen = []
    original = training.train_epoch

    def spy(run, train_set, config, epoch, progress):
        seen.append((epoch, train_set.size, tuple(train_set[0][0].shape)))
        return original(run, train_set, config, epoch, progress)

    monkeypatch.setattr(training, "train_epoch", spy)
    config = TrainConfig(data=str(dataset), out=str(tmp_path / "run"), epochs=3, progressive=[[32, 2]], **TINY)
    train(config, progress=False)
    assert seen == [(0, 32, (1, 32, 32)), (1, 32, (1, 32, 32)), (2, 64, (1, 64, 64))]
    rows = log_rows(tmp_path / "run" / "log.csv")
    assert len(rows) == 3 and all(0 <= float(r["dice"]) <= 1 for r in rows)
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=False)["size"] == 64  # prediction runs at the full size
    for bad, words in (("128", "SIZE:EPOCHS pairs"), ("100:2", "multiples of 32"), ("32:40", "must leave epochs at the full size")):
        cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "train", "--data", str(dataset), "--out", str(tmp_path / "bad"),
                              "--epochs", "3", "--progressive", bad], capture_output=True, text=True, cwd=ROOT)
        assert cli.returncode != 0 and words in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
        assert not (tmp_path / "bad").exists()


def test_repeat_shows_a_blocks_frames_several_times_each_augmented_differently(dataset, tmp_path):
    cases = [c for c in load_manifest(dataset).cases if c.split == "train"]
    block = [c for c in cases if "03750" <= (c.derived_from or c.case_id) <= "03759"]  # an independent count of the block
    assert block and any(c.derived_from for c in block)  # generated frames follow the frame they were made from
    plain = FrameDataset(dataset, ("train",), 64, augment=True, seed=0)
    tripled = FrameDataset(dataset, ("train",), 64, augment=True, seed=0, repeat=[("03750", "03759", 3)])
    assert len(plain) == len(cases) and len(tripled) == len(cases) + 2 * len(block)
    first = next(i for i, c in enumerate(tripled.cases) if c in block)
    items = [i for i, case_index in enumerate(tripled.order) if case_index == first]
    assert len(items) == 3
    images = [tripled[i][0].numpy() for i in items]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    for bad, words in (("04302-04401=x", "FIRST-LAST=N"), ("04401-04302=3", "is reversed"), ("03750-03759=1", "from 2 to 20")):
        cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "train", "--data", str(dataset), "--out", str(tmp_path / "bad"),
                              "--epochs", "1", "--repeat", bad], capture_output=True, text=True, cwd=ROOT)
        assert cli.returncode != 0 and words in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
        assert not (tmp_path / "bad").exists()
