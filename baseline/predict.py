"""`iugc baseline predict`: masks at the input size and per-case p(standard plane), AoP
and HSD (both methods) for a folder of frames."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from iugc.baseline.frames import SMOOTH, to_network
from iugc.baseline.model import BaselineNet
from iugc.baseline.postprocess import Steps, finish
from iugc.challenge.biometry import biometry
from iugc.challenge.landmarks import landmarks_of
from iugc.challenge.outputs import LANDMARKS_FILE, PROBABILITIES_FILE
from iugc.common.files import atomic_write_bytes, atomic_write_text
from iugc.data_manifest.io import IMAGE_SUFFIXES, ReadError, case_id_of, encode_png, read_image

WEIGHTS_DIR = Path(__file__).with_name("weights")


def weights_path(weights: str | Path) -> Path:
    """'default' (the shipped weights) or a checkpoint path, checked to exist."""
    if str(weights) == "default":
        path = WEIGHTS_DIR / "baseline.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"no shipped weights at {path}; train some with `iugc baseline train` and pass --weights RUN_DIR/best.pt"
            )
        return path
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{weights}: no such checkpoint; pass 'default' or a RUN_DIR/best.pt from `iugc baseline train`")
    return path


def read_checkpoint(weights: str | Path, device: str = "cpu") -> dict:
    """A checkpoint ('default' or a path) as written by training or export, normalised:
    ``model_config`` gains ``input_norm="none"`` when it predates the option, and the
    ``model`` weights are float32 (release weights are stored as fp16, or int8 with
    per-channel scales: see :func:`iugc.baseline.export.export_release`).

    Raises FileNotFoundError for a missing file and ValueError naming the file for one
    that is not such a checkpoint."""
    path = weights_path(weights)
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception:  # noqa: BLE001 - torch.load raises many types for a file that is no checkpoint
        raise ValueError(f"{path}: not a checkpoint of `iugc baseline train` or `iugc baseline export` "
                         "(PyTorch cannot read it); pass 'default' or a RUN_DIR/best.pt") from None
    if not (isinstance(state, dict) and isinstance(state.get("model_config"), dict) and isinstance(state.get("model"), dict)):
        raise ValueError(f"{path}: a PyTorch file but not a checkpoint of `iugc baseline train` (no model_config/model); "
                         "pass 'default' or a RUN_DIR/best.pt")
    state["model_config"] = {"input_norm": "none", **state["model_config"]}
    scales = state.pop("int8_scales", {})
    state["model"] = {
        k: v.float() * scales[k].reshape(-1, *[1] * (v.ndim - 1)) if k in scales else (v.float() if v.is_floating_point() else v)
        for k, v in state["model"].items()
    }
    return state


def load_model(weights: str | Path, device: str = "cpu") -> tuple[BaselineNet, int]:
    """A checkpoint written by training: returns the model in eval mode and its input size."""
    state = read_checkpoint(weights, device)
    config = state["model_config"]
    model = BaselineNet(
        encoder_name=config["encoder_name"],
        encoder_depth=config["encoder_depth"],
        decoder_channels=tuple(config["decoder_channels"]),
        in_channels=config["in_channels"],
        classifier_dropout=config["classifier_dropout"],
        input_norm=config["input_norm"],
    )
    model.load_state_dict(state["model"])
    return model.to(device).eval(), int(state["size"])


class Ensemble(torch.nn.Module):
    """Several trained networks of one input size as one: ``forward`` returns the log of
    their averaged class probabilities (so a softmax gives the average back) and the logit
    of their averaged p(standard plane), shapes as :class:`BaselineNet`.

    >>> a, b = BaselineNet(encoder_depth=3, decoder_channels=(16, 8, 4)), BaselineNet(encoder_depth=3, decoder_channels=(16, 8, 4))
    >>> masks, standard = Ensemble([a, b]).eval()(torch.zeros(1, 1, 64, 64))
    >>> tuple(masks.shape), tuple(standard.shape)
    ((1, 3, 64, 64), (1,))
    """

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 networks, got {len(members)}")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [member(x) for member in self.members]
        probs = torch.stack([masks.softmax(1) for masks, _ in outputs]).mean(0)
        p = torch.stack([torch.sigmoid(standard) for _, standard in outputs]).mean(0)
        return probs.clamp_min(1e-12).log(), torch.logit(p, eps=1e-7)


def load_models(weights: list[str | Path] | tuple[str | Path, ...], device: str = "cpu") -> tuple[torch.nn.Module, int]:
    """One checkpoint as :func:`load_model`, or several as an :class:`Ensemble` (all trained
    at the same input size)."""
    if len(weights) == 1:
        return load_model(weights[0], device)
    loaded = [load_model(w, device) for w in weights]
    sizes = {size for _, size in loaded}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}: {size}" for w, (_, size) in zip(weights, loaded))
        raise ValueError(f"ensemble members must share one input size, got {listed}")
    return Ensemble([model for model, _ in loaded]).eval(), sizes.pop()


MIN_ADAPT_FRAMES = 8


@torch.no_grad()
def adapt_batchnorm(model: torch.nn.Module, frames, size: int, device: str = "cpu", batch_size: int = 16,
                    progress: bool = False, smooth: float = SMOOTH) -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``frames`` (AdaBN).

    Label-free adaptation to a new scanner (Li et al., "Revisiting batch normalization for
    practical domain adaptation", 2016): the weights stay as trained; each BatchNorm
    layer's running mean and variance become the average of its batch statistics over the
    frames, fed in batches of ``batch_size`` as they come, smoothed as prediction will smooth
    them (``smooth``, :func:`iugc.baseline.frames.to_network`). ``frames`` is an iterable of grey
    uint8 (H, W) frames (any sizes; unlabelled, e.g. the frames about to be predicted), at
    least ``MIN_ADAPT_FRAMES`` of them. ``model`` itself is not changed.

    >>> net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    >>> frames = [np.full((64, 64), 40 * i % 255, np.uint8) for i in range(8)]
    >>> adapted = adapt_batchnorm(net, frames, 64)
    >>> bool(torch.equal(adapted.net.encoder.conv1.weight, net.net.encoder.conv1.weight)), adapted.training
    (True, False)
    """
    import copy

    from tqdm import tqdm

    adapted = copy.deepcopy(model)
    layers = [m for m in adapted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average of the batches' statistics
    adapted.train()
    batch, seen = [], 0
    for frame in tqdm(frames, desc="adapting BatchNorm", unit="frame", disable=not progress):
        batch.append(torch.from_numpy(to_network(frame, size, smooth))[None])
        seen += 1
        if len(batch) == batch_size:
            adapted(torch.stack(batch).to(device))
            batch = []
    if seen < MIN_ADAPT_FRAMES:
        raise ValueError(f"BatchNorm adaptation needs at least {MIN_ADAPT_FRAMES} frames to estimate statistics, got {seen}; "
                         "predict without it, or with more frames of the same scanner")
    if len(batch) > 1:  # each batch counts once in the average: a lone last frame would weigh as much as 16
        adapted(torch.stack(batch).to(device))
    return adapted.eval()


@torch.no_grad()
def predict_frame(model: torch.nn.Module, size: int, image: np.ndarray, device: str = "cpu", flip: bool = False,
                  steps: Steps = Steps(), smooth: float = SMOOTH):
    """Canonical mask (input size) and p(standard plane) for one grey uint8 frame.

    ``steps`` switches the post-processing steps and picks where p(standard plane) comes
    from (:class:`iugc.baseline.postprocess.Steps`);
    ``flip`` averages with the horizontally flipped frame; ``smooth`` is the Gaussian sigma
    applied to the frame first (:func:`iugc.baseline.frames.to_network`; 0: none).
    """
    x = torch.from_numpy(to_network(image, size, smooth))[None, None].to(device)
    logits, standard = model(x)
    probs = logits.softmax(1)
    if flip:  # test-time augmentation: average with the horizontally flipped frame
        flipped, standard_f = model(torch.flip(x, dims=[3]))
        probs = (probs + torch.flip(flipped.softmax(1), dims=[3])) / 2
        standard = (standard + standard_f) / 2
    return finish(probs[0].float().cpu().numpy(), float(torch.sigmoid(standard)[0]), image.shape, steps)


def _video_frames(path: Path, errors: dict) -> list[tuple[str, np.ndarray]]:
    """Every frame of an .avi clip as (``<video>_<frame:04d>``, grey frame)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        errors[path.stem] = f"{path}: not a readable video"
        return []
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            frames.append((f"{path.stem}_{len(frames):04d}", grey))
    finally:
        capture.release()
    return frames


def _readable(frames: list, errors: dict):
    """(case_id, grey frame) for each entry of ``frames`` that reads; the others go to ``errors``."""
    for case_id, source in frames:
        try:
            yield case_id, (read_image(source) if isinstance(source, Path) else source)
        except ReadError as exc:
            errors[case_id] = str(exc)


def predict_folder(input_dir: Path, output_dir: Path, weights="default", device="cpu", flip=False, progress=True,
                   steps: Steps = Steps(), adapt_bn: bool = False, smooth: float = SMOOTH) -> dict:
    """Predict every frame of ``input_dir`` into ``output_dir``. ``weights``: 'default', a
    checkpoint path, or a list of them (averaged as an :class:`Ensemble`). ``adapt_bn``:
    first re-estimate BatchNorm statistics on these frames (:func:`adapt_batchnorm`; each
    prediction then depends on the whole folder). ``smooth``: see :func:`predict_frame`."""
    from tqdm import tqdm

    results, errors, landmarks = {}, {}, {}
    folder = Path(input_dir)
    paths = sorted(p for p in folder.iterdir() if case_id_of(p) and p.name.lower().endswith(IMAGE_SUFFIXES))
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".avi")
    frames = [(case_id_of(p), p) for p in paths] + [item for v in videos for item in _video_frames(v, errors)]
    if not frames:  # an empty folder is a mistake, not a prediction of nothing
        raise ValueError(f"{folder} holds no frame to predict (no {', '.join(IMAGE_SUFFIXES)} or .avi file"
                         f"{'; ' + str(len(errors)) + ' unreadable video(s)' if errors else ''}): give the folder of the frames")
    model, size = load_models([weights] if isinstance(weights, (str, Path)) else list(weights), device)
    if adapt_bn:  # before anything is written: too few frames is an error that leaves nothing behind
        model = adapt_batchnorm(model, (image for _, image in _readable(frames, {})), size, device, progress=progress,
                                smooth=smooth)
    output_dir = Path(output_dir)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for case_id, image in tqdm(_readable(frames, errors), total=len(frames), desc="predicting", unit="frame",
                                   disable=not progress):
            mask, p = predict_frame(model, size, image, device, flip, steps, smooth)
            target = output_dir / f"{case_id}.png"
            atomic_write_bytes(target, encode_png(mask))
            written.append(target)
            ellipse, contour = biometry(mask, "ellipse"), biometry(mask, "contour")
            results[case_id] = {
                "p_standard_plane": p,
                "aop_ellipse": ellipse.aop,
                "aop_contour": contour.aop,
                "hsd_contour": contour.hsd,
            }
            points = landmarks_of(contour)
            if points is not None:
                landmarks[case_id] = points
        if not results:
            raise ValueError(f"none of the {len(frames)} frames in {folder} could be read (the first: {next(iter(errors.values()))}); "
                             "nothing was written")
        atomic_write_text(output_dir / PROBABILITIES_FILE, json.dumps(results, indent=1) + "\n")
        atomic_write_text(output_dir / LANDMARKS_FILE, json.dumps(landmarks, indent=1) + "\n")
    except BaseException:  # interrupted or failed: no partial prediction folder is left to be scored
        for path in written:
            path.unlink(missing_ok=True)
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise
    return {"predicted": len(results), "errors": errors}
