"""The baseline end to end on a few real frames, one short epoch, on CPU."""
import csv
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed")

from baseline.model import BaselineNet  # noqa: E402
from baseline.postprocess import postprocess  # noqa: E402
from baseline.data import FrameDataset  # noqa: E402
from baseline.frames import SMOOTH  # noqa: E402
from baseline.predict import load_model  # noqa: E402
from baseline.train import TrainConfig, train, validate  # noqa: E402
from data_manifest.importers import import_dataset  # noqa: E402
from data_manifest.manifest import load_manifest, write_manifest  # noqa: E402
from data_manifest.nonstandard import generate_nonstandard_dataset  # noqa: E402
from data_manifest.split import split_by_blocks  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

TINY = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8], "size": 64, "batch_size": 8}


@pytest.fixture(scope="module")
def dataset(psfhs_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    import_dataset("psfhs", psfhs_dir / "release_sample", root / "real", progress=False)
    write_manifest(root / "real", split_by_blocks(load_manifest(root / "real"), {"train": [("03744", "03771")], "validation": [("03772", "03783")]}))
    generate_nonstandard_dataset(root / "real", root / "ds", per_frame=0.3, seed=0, progress=False)
    return root / "ds"


def log_rows(path) -> list[dict]:
    """The rows of a run's log.csv (the file closed again)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_model_outputs_masks_and_a_standard_logit():
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    masks, standard = net(torch.zeros(3, 1, 32, 32))
    assert masks.shape == (3, 3, 32, 32) and standard.shape == (3,)
    with pytest.raises(ValueError, match="3 entries"):
        BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8))


def test_postprocess_keeps_largest_component_and_fills_holes():
    m = np.zeros((20, 20), np.uint8)
    m[2:10, 2:10] = 2
    m[5, 5] = 0  # a hole
    m[15:17, 15:17] = 2  # a stray blob
    out = postprocess(m)
    assert out[5, 5] == 2 and out[15, 15] == 0 and out[3, 3] == 2
    assert postprocess(m, largest=False, holes=False, ellipse=False).tolist() == m.tolist()


def test_ellipse_head_restores_a_notched_head_and_leaves_the_rest():
    from baseline.postprocess import ellipse_head

    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = np.zeros((256, 256), np.uint8)
        centre = (int(rng.integers(100, 156)), int(rng.integers(110, 150)))
        axes = (int(rng.integers(40, 70)), int(rng.integers(40, 70)))
        cv2.ellipse(truth, centre, axes, float(rng.uniform(0, 180)), 0, 360, 2, -1)
        truth[20:40, 100:150] = 1  # a PS above the head
        damaged = truth.copy()  # a faint stretch of skull: a wedge of the head missed
        start = float(rng.uniform(0, 360))
        cv2.ellipse(damaged, centre, (axes[0] + 5, axes[1] + 5), 0.0, start, start + 50, 0, -1)
        damaged[truth == 1] = 1

        def head_dice(m, truth=truth):
            return 2 * ((m == 2) & (truth == 2)).sum() / ((m == 2).sum() + (truth == 2).sum())

        fixed = ellipse_head(damaged)
        assert head_dice(fixed) > max(0.96, head_dice(damaged) + 0.04)
        assert np.array_equal(fixed == 1, truth == 1)  # PS untouched
    no_head = np.where(truth == 1, 1, 0).astype(np.uint8)
    assert np.array_equal(ellipse_head(no_head), no_head)


def test_ellipse_symphysis_restores_a_bitten_symphysis_and_leaves_the_head():
    from baseline.postprocess import ellipse_structure

    rng = np.random.default_rng(1)
    for _ in range(20):
        truth = np.zeros((256, 256), np.uint8)
        centre, axes = (int(rng.integers(90, 166)), int(rng.integers(50, 70))), (int(rng.integers(22, 32)), int(rng.integers(9, 14)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(truth, centre, axes, angle, 0, 360, 1, -1)  # an elongated symphysis
        truth[160:220, 60:200] = 2  # a block of head below it
        damaged = truth.copy()  # a faint stretch of outline: a bite out of one side, 0.8 of the short half-axis deep
        t, a = rng.uniform(0, 2 * np.pi), np.radians(angle)
        x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
        side = (int(round(centre[0] + x * np.cos(a) - y * np.sin(a))), int(round(centre[1] + x * np.sin(a) + y * np.cos(a))))
        cv2.circle(damaged, side, int(0.8 * min(axes)), 0, -1)
        damaged[truth == 2] = 2

        def ps_dice(m, truth=truth):
            return 2 * ((m == 1) & (truth == 1)).sum() / ((m == 1).sum() + (truth == 1).sum())

        fixed = ellipse_structure(damaged, 1)
        assert ps_dice(fixed) > max(0.92, ps_dice(damaged))
        assert np.array_equal(fixed == 2, truth == 2)  # the head untouched
    no_ps = np.where(truth == 2, 2, 0).astype(np.uint8)
    assert np.array_equal(ellipse_structure(no_ps, 1), no_ps)


def test_postprocess_turns_the_symphysis_into_an_ellipse_unless_switched_off():
    m = np.zeros((64, 64), np.uint8)
    m[10:20, 10:40] = 1  # a rectangle of symphysis: its ellipse differs at the corners
    m[35:60, 20:50] = 2
    assert np.array_equal(postprocess(m, ellipse=False, ellipse_ps=False) == 1, m == 1)
    rounded = postprocess(m, ellipse=False)
    assert rounded[10, 10] == 0 and rounded[15, 25] == 1
    assert np.array_equal(rounded == 2, m == 2)


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
    from baseline.predict import load_model, predict_frame
    from challenge.definition import load_challenge
    from data_manifest.io import read_image, read_mask
    from evaluator.scores import CaseTable, aggregate, segmentation_values

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
    from baseline.train import Run, build_run, load_checkpoint, save_checkpoint

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


def test_missing_weights_give_a_clear_error(tmp_path):
    cli = subprocess.run([sys.executable, "-m", "iugc", "baseline", "predict", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                          "--weights", str(tmp_path / "nope.pt")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode != 0 and "no such checkpoint" in cli.stderr and "nope.pt" in cli.stderr


def test_onnx_export_agrees_with_pytorch_without_importing_torch(dataset, tmp_path):
    from baseline.predict import load_model, predict_frame
    from data_manifest.io import read_image

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
        "from baseline.onnx_predict import OnnxPredictor\n"
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


def test_same_seed_retrains_to_the_same_validation_dice(dataset, tmp_path):
    first = train(TrainConfig(data=str(dataset), out=str(tmp_path / "a"), epochs=1, seed=3, **TINY), progress=False)
    second = train(TrainConfig(data=str(dataset), out=str(tmp_path / "b"), epochs=1, seed=3, **TINY), progress=False)
    assert abs(first["dice"] - second["dice"]) <= 0.01


def test_predict_reads_every_frame_of_avi_clips(dataset, tmp_path):
    from baseline.predict import predict_folder
    from data_manifest.phantom import write_phantom_iugc2024

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


def test_fp16_release_weights_are_smaller_and_predict_alike(tmp_path):
    from baseline.export import export_release
    from baseline.predict import load_model

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


def test_augmentation_is_seeded_and_keeps_image_and_mask_aligned():
    from baseline.data import augment

    image = np.zeros((128, 128), np.float32)
    mask = np.zeros((128, 128), np.uint8)
    image[30:60, 40:70], mask[30:60, 40:70] = 1.0, 1
    for seed in range(20):
        a_img, a_mask = augment(image, mask, np.random.default_rng(seed))
        b_img, b_mask = augment(image, mask, np.random.default_rng(seed))
        assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
        assert a_img.dtype == np.float32 and 0 <= a_img.min() and a_img.max() <= 1
        assert set(np.unique(a_mask).tolist()) <= {0, 1}
        if a_mask.any():  # the labelled square moved with the image: brighter inside than outside
            assert a_img[a_mask == 1].mean() > a_img[a_mask == 0].mean() + 0.2


def test_scan_sector_blacks_out_the_image_and_its_labels_alike():
    from baseline.data import _fan

    for seed in range(10):
        fan = _fan(256, 256, np.random.default_rng(seed))
        assert fan[60:160, 120:136].all()  # the scan axis below the apex stays
        assert not fan[0, 0] and not fan[0, -1]  # the top corners are outside any sector
        assert 0.25 < fan.mean() < 0.9


def test_head_shading_dims_one_side_of_the_head_and_nothing_far_from_it():
    from baseline.data import _shade_head

    image = np.full((128, 128), 0.5, np.float32)
    mask = np.zeros((128, 128), np.uint8)
    cv2.circle(mask, (64, 70), 30, 2, -1)
    far = cv2.dilate(mask, np.ones((33, 33), np.uint8)) == 0  # more than 16 px from the head
    for seed in range(20):
        shaded = _shade_head(image, mask, np.random.default_rng(seed))
        assert np.array_equal(shaded[far], image[far])
        assert (shaded <= image).all()
        head = shaded[mask == 2]
        assert (head < 0.4).mean() > 0.2, seed  # a good part of the head is dimmed ...
        assert (head > 0.49).mean() > 0.1, seed  # ... and a part of it is not
    no_head = np.where(mask == 2, 1, 0).astype(np.uint8)  # only PS: nothing to shade
    assert np.array_equal(_shade_head(image, no_head, np.random.default_rng(0)), image)


def test_an_augmented_frame_that_loses_a_structure_is_no_longer_standard(dataset):
    from baseline.data import FrameDataset

    ds = FrameDataset(dataset, ("train",), 64, augment=True, seed=0)
    seen = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        for index, case in enumerate(ds.cases):
            _, mask, label = ds[index]
            both = bool((mask == 1).any() and (mask == 2).any())
            if case.standard_plane:
                assert float(label) == float(both), (case.case_id, epoch)
                seen += not both
            else:
                assert float(label) == 0.0
    assert seen >= 1  # the geometry does push a structure out now and then


def test_frame_standardisation_makes_the_network_blind_to_gain_and_offset():
    torch.manual_seed(0)
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    raw = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), input_norm="none").eval()
    raw.load_state_dict(net.state_dict())
    x = torch.rand(2, 1, 64, 64) * 0.5
    with torch.no_grad():
        normalised = (net(x)[0] - net(1.6 * x + 0.2)[0]).abs().max()
        unnormalised = (raw(x)[0] - raw(1.6 * x + 0.2)[0]).abs().max()
    assert normalised < 0.05 and unnormalised > 20 * normalised
    with pytest.raises(ValueError, match="input_norm"):
        BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), input_norm="batch")


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


def test_a_checkpoint_older_than_input_norm_loads_unnormalised_and_fp16_as_float(tmp_path):
    from baseline.predict import load_model, read_checkpoint

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


def test_anatomy_warp_moves_the_head_whole_and_leaves_the_symphysis(psfhs_dir):
    from baseline.data import anatomy_warp

    moved = 0
    for case_id in range(3744, 4402, 47):
        mask = cv2.imread(str(psfhs_dir / "masks" / f"{case_id:05d}.png"), cv2.IMREAD_UNCHANGED)
        image = mask.astype(np.float32) / 2  # the image is the mask: alignment is visible
        ps, fh = np.argwhere(mask == 1), np.argwhere(mask == 2)
        axis = fh.mean(0) - ps.mean(0)
        axis /= np.linalg.norm(axis)
        gap = ((fh - ps.mean(0)) @ axis).min() - ((ps - ps.mean(0)) @ axis).max()
        push = min(20.0, 2 * gap)
        w_image, w_mask = anatomy_warp(image, mask, push=20.0, ps_turn=0.0)
        assert np.array_equal(w_mask == 1, mask == 1), case_id  # the PS lies before the ramp: untouched
        head = np.argwhere(w_mask == 2)
        shift = (head.mean(0) - fh.mean(0)) @ axis
        assert abs(shift - push) < 1.0, (case_id, shift, push)  # moved as far as the cap allows ...
        assert abs(len(head) - len(fh)) < 0.02 * len(fh), case_id  # ... and whole
        assert (np.abs(w_image - w_mask / 2) < 0.26).mean() > 0.99  # image and labels moved together
        moved += push > 5
    assert moved >= 8


def test_anatomy_warp_turns_the_symphysis_and_not_the_head(psfhs_dir):
    from baseline.data import anatomy_warp

    def ps_axis_degrees(mask):
        _, _, angle = cv2.fitEllipse(cv2.findContours((mask == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0])
        return angle

    for case_id in range(3744, 4402, 61):
        mask = cv2.imread(str(psfhs_dir / "masks" / f"{case_id:05d}.png"), cv2.IMREAD_UNCHANGED)
        for turn in (-15.0, 12.0):
            _, w_mask = anatomy_warp(mask.astype(np.float32), mask, push=0.0, ps_turn=turn)
            assert np.array_equal(w_mask == 2, mask == 2), case_id
            change = (ps_axis_degrees(w_mask) - ps_axis_degrees(mask) + 90) % 180 - 90
            assert abs(abs(change) - abs(turn)) < 4, (case_id, turn, change)
    only_head = np.where(mask == 2, 2, 0).astype(np.uint8)
    assert np.array_equal(anatomy_warp(only_head.astype(np.float32), only_head, 20.0, 10.0)[1], only_head)


def test_weight_average_follows_the_weights_and_survives_a_resume(dataset, tmp_path):
    from baseline.train import WeightAverage

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
    script = ("from baseline.train import TrainConfig, train\n"
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


def test_a_structure_the_argmax_missed_is_completed_only_where_the_head_sees_a_standard_plane():
    from baseline.postprocess import STANDARD, Steps, finish

    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 0.7
    probs[1] = 0.1
    probs[1, 10:20, 20:40] = 0.4  # the PS is likely here, but never the argmax
    probs[1, 50:52, 5:7] = 0.35  # a smaller, separate likely patch: not taken
    probs[2, 30:60, 20:50] = 0.9  # the head wins the argmax
    probs[0, 30:60, 20:50] = 0.05
    completed, p = finish(probs, STANDARD, (128, 128), Steps(ellipse=False, ellipse_ps=False))
    ps = completed == 1
    assert ps[20:40, 40:80].all() and ps.sum() == 20 * 40  # the PS region, at the frame's size
    assert (completed == 2).sum() == 60 * 60  # the head untouched
    assert p == STANDARD  # the head's: p(standard plane)'s default source
    _, mean = finish(probs, STANDARD, (128, 128), Steps(ellipse=False, ellipse_ps=False, standard_from="mean"))
    assert mean == pytest.approx((0.4 + STANDARD) / 2)  # the segmentation's 0.4 (the PS is never the argmax) and the head's
    assert not (finish(probs, STANDARD - 0.01, (128, 128))[0] == 1).any()  # not a standard plane: left missing
    assert not (finish(probs, 0.99, (128, 128), Steps(complete=False))[0] == 1).any()  # switched off
    with pytest.raises(ValueError, match=r"\(3, H, W\).*\(2, 64, 64\)"):
        from baseline.postprocess import complete_structures

        complete_structures(np.zeros((64, 64), np.uint8), probs[:2])


def test_p_standard_comes_from_the_head_the_iugc_rule_on_the_segmentation_or_their_mean():
    from baseline.postprocess import Steps, finish, standard_probability

    probs = np.zeros((3, 32, 32), np.float32)
    probs[0] = 1.0
    probs[:, 2:6, 10:20] = np.array([0.2, 0.8, 0.0])[:, None, None]  # a symphysis, p(PS) 0.8
    probs[:, 15:30, 5:25] = np.array([0.4, 0.0, 0.6])[:, None, None]  # a head, p(FH) 0.6
    assert standard_probability(probs, 0.1, "segmentation") == pytest.approx(0.6)  # the weaker structure decides
    assert standard_probability(probs, 0.1, "head") == pytest.approx(0.1)
    assert standard_probability(probs, 0.1, "mean") == pytest.approx(0.35)
    assert standard_probability(probs, 0.1) == pytest.approx(0.1)  # the default: the head
    no_head = probs.copy()
    no_head[:, 15:30, 5:25] = np.array([0.7, 0.0, 0.3])[:, None, None]  # the head never the argmax
    assert standard_probability(no_head, 0.9, "segmentation") == pytest.approx(0.3)  # below 0.5: not standard
    # the source changes what is reported, never the mask
    reported = {source: finish(no_head, 0.9, (64, 64), Steps(standard_from=source)) for source in ("mean", "segmentation", "head")}
    assert all((mask == reported["head"][0]).all() for mask, _ in reported.values())
    assert [p for _, p in reported.values()] == [pytest.approx(0.6), pytest.approx(0.3), 0.9]
    assert finish(no_head, 0.9, (64, 64))[1] == 0.9  # prediction's default: the head
    with pytest.raises(ValueError, match="standard_from must be one of .*'both'"):
        Steps(standard_from="both")
    with pytest.raises(ValueError, match=r"\(3, H, W\) softmax: got shape \(32, 32\)"):
        standard_probability(probs[0], 0.5)


def test_int8_release_weights_are_a_quarter_of_float32_and_predict_alike(tmp_path):
    from baseline.export import export_release, quantize_int8
    from baseline.predict import load_model

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


def test_an_ensemble_averages_its_members_probabilities():
    from baseline.predict import Ensemble

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
    from baseline.predict import read_checkpoint

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


def _one_epoch_weights(dataset, out, **options) -> dict:
    """The state dict after one epoch of the TINY network trained into ``out``."""
    train(TrainConfig(data=str(dataset), out=str(out), epochs=1, **TINY, **options), progress=False)
    return torch.load(out / "last.pt", weights_only=False)["model"]


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


def test_boundary_band_is_the_pixels_near_a_label_edge():
    from baseline.train import boundary_band

    mask = np.zeros((40, 50), np.uint8)
    cv2.circle(mask, (20, 20), 9, 2, -1)
    mask[30:36, 5:45] = 1
    kernel = np.ones((5, 5), np.uint8)
    expected = np.zeros(mask.shape, bool)
    for label in (0, 1, 2):  # an independent oracle: dilation differs from erosion, per label (border not an edge)
        region = np.pad((mask == label).astype(np.uint8), 2, mode="edge")
        expected |= (cv2.dilate(region, kernel) != cv2.erode(region, kernel))[2:-2, 2:-2]
    band = boundary_band(torch.from_numpy(mask.astype(np.int64))[None], 5)[0].numpy()
    assert band.shape == mask.shape
    assert np.array_equal(band, expected)


def test_boundary_weight_makes_a_mistake_on_an_outline_cost_more_than_one_inside():
    from baseline.train import loss_fn

    masks = torch.zeros(1, 32, 32, dtype=torch.long)
    masks[0, 8:24, 8:24] = 2
    logits = _confident_logits(masks)
    on_edge, inside = logits.clone(), logits.clone()
    on_edge[0, :, 8, 16] = torch.tensor([10.0, 0.0, 0.0])  # a head pixel on its outline called background
    inside[0, :, 16, 16] = torch.tensor([10.0, 0.0, 0.0])  # the same mistake in the middle of the head
    standard, label = torch.zeros(1), torch.ones(1)

    def cost(wrong, weight):  # what the one mistake adds to the loss of the correct prediction
        return float(loss_fn(wrong, masks, standard, label, weight) - loss_fn(logits, masks, standard, label, weight))

    assert cost(on_edge, 0.0) == pytest.approx(cost(inside, 0.0), rel=1e-4)
    assert cost(on_edge, 4.0) > 2 * cost(inside, 4.0) > 0


def _confident_logits(masks):
    """Confident, correct logits (N, 3, H, W) for int64 masks (N, H, W)."""
    return torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 10.0


def test_batchnorm_adaptation_takes_the_statistics_of_the_new_frames(psfhs_dir):
    from baseline.predict import adapt_batchnorm, load_model

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


def _to_network(frame, size):
    """What prediction feeds the network, for a frame already at the network size: an
    oracle with SciPy (the default smoothing, sigma 1, mirrored edges)."""
    from scipy.ndimage import gaussian_filter

    assert frame.shape == (size, size)
    return gaussian_filter(frame.astype(np.float32) / 255, 1.0, mode="reflect", truncate=4.0)


def test_smoothing_is_a_gaussian_low_pass_that_prediction_applies_and_training_does_not():
    from baseline.frames import SMOOTH, to_network

    rng = np.random.default_rng(0)
    speckle = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    plain = to_network(speckle, 64)
    assert np.array_equal(plain, speckle.astype(np.float32) / 255)  # training: the frame as it is
    smoothed = to_network(speckle, 64, SMOOTH)
    assert SMOOTH == 1.0 and np.allclose(smoothed, _to_network(speckle, 64), atol=1e-5)
    assert smoothed.std() < 0.4 * plain.std()  # pixel-scale speckle is mostly gone
    edge = np.zeros((64, 64), np.uint8)
    edge[:, 32:] = 255
    kept = to_network(edge, 64, SMOOTH)
    assert kept[:, :28].max() < 0.01 and kept[:, 36:].min() > 0.99  # a structure's edge stays where it was
    with pytest.raises(ValueError, match="smooth must be a sigma >= 0.*got -1"):
        to_network(speckle, 64, smooth=-1)


def test_predict_smooths_by_default_and_not_with_smooth_0(psfhs_dir, tmp_path):
    from baseline.predict import load_model, predict_frame

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
    from baseline.predict import adapt_batchnorm, load_model, predict_frame

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


def test_style_noise_moves_each_channels_statistics_and_keeps_its_pattern():
    from baseline.model import StyleNoise

    torch.manual_seed(0)
    layer = torch.nn.Identity().train()
    x = torch.randn(8, 4, 16, 16) * torch.rand(8, 4, 1, 1) * 3 + torch.randn(8, 4, 1, 1) * 2
    out = StyleNoise(1.0)(layer, (x,), x)

    def pattern(t):  # each frame's channels standardised over H, W (numpy, independently)
        a = t.numpy().astype(np.float64)
        return (a - a.mean((2, 3), keepdims=True)) / a.std((2, 3), keepdims=True)

    np.testing.assert_allclose(pattern(out), pattern(x), atol=1e-3)
    moved = (out.mean((2, 3)) - x.mean((2, 3))).abs()
    assert float(moved.mean()) > 0.1  # the means moved by about their spread across the batch (~2)
    same = torch.randn(1, 4, 16, 16).repeat(8, 1, 1, 1)  # no spread across the batch: nothing to draw from
    assert torch.allclose(StyleNoise(1.0)(layer, (same,), same), same, atol=3e-2)  # vs moves of ~2
    assert StyleNoise(1.0)(layer.eval(), (x,), x) is None  # eval mode: untouched
    assert StyleNoise(0.0)(layer.train(), (x,), x) is None
    assert StyleNoise(1.0)(layer, (x[:1],), x[:1]) is None  # a batch of one has no spread
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got 1.5"):
        StyleNoise(1.5)


def test_style_noise_trains_differently_and_leaves_the_checkpoint_alone(dataset, tmp_path):
    from baseline.model import add_style_noise

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
    import baseline.train as training

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


def test_training_selects_epochs_with_undefined_truth_angles_left_out(dataset, tmp_path):
    """Generated non-standard frames have no truth AoP: validation leaves them out of the
    angle's mean (psfhs2023's count-as-zero rule is for real standard planes)."""
    from baseline.predict import predict_frame
    from challenge.biometry import biometry
    from data_manifest.io import read_image, read_mask

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
    from baseline import train as training

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
