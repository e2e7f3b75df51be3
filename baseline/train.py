"""`iugc baseline train` / `finetune`: training with validation through the evaluator,
a CSV log, a plot of the curves, best-checkpoint selection on the PSFHS score, and
resumption after a kill (from RUN_DIR/last.pt).

Fine-tuning measures the starting weights first (epoch 0 in the log) and keeps them as
``best.pt`` unless an epoch beats them, so a fine-tune that hurts never replaces good
weights. A refit (``refit=True``) trains on the train and validation splits together
with no validation, and ``best.pt`` is the weight average after the last epoch: the
epoch count comes from a split run, whose held-out figures describe it."""
from __future__ import annotations

import csv
import functools
import json
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from iugc.baseline.data import FrameDataset
from iugc.baseline.frames import SMOOTH
from iugc.baseline.model import NUM_CLASSES, BaselineNet, add_style_noise
from iugc.baseline.postprocess import finish, standard_probability
from iugc.challenge.biometry import biometry
from iugc.challenge.definition import load_challenge
from iugc.data_manifest.io import read_mask
from iugc.evaluator.classification import accuracy, auc
from iugc.evaluator.scores import CaseTable, aggregate, biometry_values, challenge_score, segmentation_values

LOG_COLUMNS = [
    "epoch", "train_loss", "dice", "hd", "asd", "aop_error_ellipse", "aop_error_contour", "hsd_error",
    "accuracy", "auc", "psfhs_score", "seconds", "lr",
]


@dataclass
class TrainConfig:
    data: str
    out: str
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    resume: bool = False
    size: int = 256
    encoder_name: str = "resnet18"
    encoder_weights: str | None = None
    encoder_depth: int = 5
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])
    input_norm: str = "frame"
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_splits: list[str] = field(default_factory=lambda: ["validation"])
    init_from: str | None = None
    freeze_encoder: bool = False
    ema_decay: float = 0.99
    workers: int = 0
    val_every: int = 1
    boundary_weight: float = 0.0
    style_noise: float = 0.0
    warmup_epochs: float = 0.0
    refit: bool = False
    progressive: list[list[int]] = field(default_factory=list)
    """Progressive resizing: ``[[size, epochs], ...]`` train the first epochs at smaller
    sizes, in that order; the rest at ``size`` (validation is always at ``size``)."""
    repeat: list[list] = field(default_factory=list)
    """``[[first, last, times], ...]``: the training frames of those id blocks come ``times``
    times per epoch (a scanner with few frames weighed more); validation is unchanged."""


def size_at(config: "TrainConfig", epoch: int) -> int:
    """The input size epoch ``epoch`` (0-based) trains at.

    >>> c = TrainConfig(data="", out="", epochs=10, progressive=[[128, 3], [192, 2]])
    >>> [size_at(c, e) for e in range(10)]
    [128, 128, 128, 192, 192, 256, 256, 256, 256, 256]
    """
    first = 0
    for size, epochs in config.progressive:
        if epoch < first + epochs:
            return size
        first += epochs
    return config.size


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def boundary_band(masks: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Pixels within ``width // 2`` px of a label edge (bool (N, H, W)) of int64 masks (N, H, W).

    >>> m = torch.zeros(1, 9, 9, dtype=torch.long); m[0, 3:6, 3:6] = 1
    >>> boundary_band(m, 3)[0].sum().item()  # the 5x5 ring around the 3x3 square's edge, less its centre
    24
    """
    onehot = F.one_hot(masks, NUM_CLASSES).permute(0, 3, 1, 2).float()
    grown = F.max_pool2d(onehot, width, stride=1, padding=width // 2)
    shrunk = -F.max_pool2d(-onehot, width, stride=1, padding=width // 2)
    return (grown != shrunk).any(1)


def loss_fn(logits, masks, standard_logit, standard, boundary_weight: float = 0.0):
    """Cross-entropy + soft Dice on PS and FH, + BCE on the standard-plane logit.

    ``boundary_weight`` > 0 weighs the cross-entropy of pixels near a label edge (a 5 px
    band, :func:`boundary_band`) 1 + boundary_weight times: the angle of progression is
    read off the outlines, and the interior of a structure is easy.
    """
    if boundary_weight:
        weights = 1 + boundary_weight * boundary_band(masks).float()
        ce = (F.cross_entropy(logits, masks, reduction="none") * weights).sum() / weights.sum()
    else:
        ce = F.cross_entropy(logits, masks)
    probs = logits.softmax(1)
    onehot = F.one_hot(masks, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    dice = (2 * inter + 1) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    return ce + (1 - dice[1:].mean()) + F.binary_cross_entropy_with_logits(standard_logit, standard)


@functools.cache
def selection_challenge():
    """psfhs2023 with undefined truth angles left out of epoch selection (see :func:`validate`);
    built on first use, so importing this module reads no definition file."""
    from iugc.challenge.definition import UndefinedPolicy

    psfhs = load_challenge("psfhs2023")
    return psfhs.model_copy(update={"undefined_biometry": UndefinedPolicy(ground_truth="exclude", prediction="worst_case")})


@torch.no_grad()
def validate(model: BaselineNet, dataset: FrameDataset, device: str, truths: dict | None = None) -> dict:
    """Validation figures through the evaluator (masks compared at the frames' own size).

    ``truths`` caches each case's truth mask and biometry across epochs (they never change).
    The PSFHS score here selects epochs on real and generated frames together, so an AoP
    the truth cannot define (a generated frame missing a structure) leaves the angle's
    mean, and a prediction without one scores 180 degrees, rather than psfhs2023's
    count-as-zero rule, which is made for real standard planes and would reward missing a
    structure on a non-standard frame as much as finding it.
    """
    truths = {} if truths is None else truths
    model.eval()
    psfhs = selection_challenge()
    cases, labels, probs, contour_errors = {}, [], [], []
    iugc = load_challenge("iugc2024")
    for index, case in enumerate(dataset.cases):
        image, _, label = dataset[index]
        logits, standard = model(image[None].to(device))
        softmax, p_head = logits[0].softmax(0).float().cpu().numpy(), float(torch.sigmoid(standard)[0])
        labels.append(int(label))
        if not case.mask:
            probs.append(standard_probability(softmax, p_head))
            continue
        if case.case_id not in truths:
            truth = read_mask(dataset.root / case.mask)
            truths[case.case_id] = (truth, biometry(truth, "ellipse"), biometry(truth, "contour"))
        truth, truth_ellipse, truth_contour = truths[case.case_id]
        pred, p_standard = finish(softmax, p_head, truth.shape)
        probs.append(p_standard)
        values = segmentation_values(pred, truth)
        values.update(biometry_values(biometry(pred, "ellipse"), truth_ellipse, psfhs))
        contour = biometry_values(biometry(pred, "contour"), truth_contour, iugc)
        contour_errors.append((contour["aop_error"], contour["hsd_error"]))
        cases[case.case_id] = values
    out = {"accuracy": accuracy(labels, probs), "auc": auc(labels, probs)}
    if cases:
        agg = aggregate(CaseTable.from_cases(cases), psfhs)
        out.update({k: agg[k] for k in ("dice", "hd", "asd")})
        out["aop_error_ellipse"] = agg["aop_error"]
        aop_c = [a for a, _ in contour_errors if a is not None]
        hsd_c = [h for _, h in contour_errors if h is not None]
        out["aop_error_contour"] = float(np.mean(aop_c)) if aop_c else None
        out["hsd_error"] = float(np.mean(hsd_c)) if hsd_c else None
        out["psfhs_score"] = challenge_score(agg, psfhs)[0]
    return out


class WeightAverage:
    """An exponential moving average of the model's weights and BatchNorm statistics,
    updated after every optimiser step; validation and checkpoints use it.

    Single training steps on 16 augmented frames move a from-scratch network a lot: the
    validation figures of consecutive epochs jumped by 0.05-0.1 Dice on the second
    scanner. The average is the usual remedy (and usually generalises better). The decay
    warms up as min(decay, (1 + step) / (10 + step)) so short runs are not dominated by
    the random initialisation; ``decay=0`` keeps the raw weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy

        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                mine.lerp_(theirs, 1 - decay)
            else:
                mine.copy_(theirs)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # interrupted mid-save: the old checkpoint stays, no stray .tmp beside it
        tmp.unlink(missing_ok=True)
        raise


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, keys, title in zip(
        axes,
        (["train_loss"], ["dice"], ["aop_error_ellipse", "aop_error_contour"], ["psfhs_score"]),
        ("training loss", "validation Dice (all)", "validation |dAoP| (degrees)", "validation PSFHS score"),
    ):
        for key in keys:
            ax.plot(epochs, [np.nan if r[key] in (None, "") else float(r[key]) for r in rows], label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def build_model(config: TrainConfig) -> BaselineNet:
    return BaselineNet(
        encoder_name=config.encoder_name,
        encoder_weights=config.encoder_weights,
        encoder_depth=config.encoder_depth,
        decoder_channels=tuple(config.decoder_channels),
        input_norm=config.input_norm,
    )


def _from_checkpoint(config: TrainConfig) -> tuple[TrainConfig, dict]:
    """Fine-tuning: the checkpoint's architecture and input size replace the config's."""
    from iugc.baseline.predict import read_checkpoint

    state = read_checkpoint(config.init_from)
    arch = state["model_config"]
    config = replace(
        config, encoder_name=arch["encoder_name"], encoder_depth=arch["encoder_depth"],
        decoder_channels=list(arch["decoder_channels"]), input_norm=arch["input_norm"], size=int(state["size"]),
    )
    return config, state


def freeze_encoder(model: BaselineNet) -> None:
    """Fine-tuning with a frozen encoder: its weights get no gradient."""
    for p in model.encoder_parameters():
        p.requires_grad = False


def set_training_mode(model: BaselineNet, frozen_encoder: bool) -> None:
    """Training mode, except a frozen encoder's BatchNorm layers, which keep the statistics
    they were trained with (in training mode they would drift to the new data's while their
    weights stay put); the style-noise hooks still act."""
    model.train()
    if frozen_encoder:
        for module in model.net.encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


@dataclass
class Run:
    """Everything a training run changes as it goes, so everything :func:`save_checkpoint`
    stores and :func:`load_checkpoint` restores."""

    model: BaselineNet
    average: WeightAverage
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    rows: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"psfhs_score": -np.inf})
    next_epoch: int = 0


def build_run(config: TrainConfig, init_state: dict | None) -> Run:
    """The network (from ``init_state``'s weights when fine-tuning), its weight average,
    optimiser, schedule and gradient scaler."""
    device = config.device
    # channels_last: about 30% faster training steps on CPU (oneDNN), and the layout tensor cores prefer.
    model = build_model(config).to(device, memory_format=torch.channels_last)
    if init_state is not None:
        model.load_state_dict(init_state["model"])
    if config.freeze_encoder:
        freeze_encoder(model)
    average = WeightAverage(model, config.ema_decay)
    if config.style_noise:  # on the trained network only: the average is evaluated, never perturbed
        add_style_noise(model, config.style_noise)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device == "cuda")
    return Run(model, average, optimizer, scheduler, scaler)


def weights_checkpoint(run: Run, config: TrainConfig, epoch: int) -> dict:
    """What prediction and fine-tuning read (best.pt): the weight average, its architecture
    and input size, the epoch (0-based; -1 for the starting weights) and the log so far."""
    return {"model": run.average.model.state_dict(), "model_config": run.model.config, "epoch": epoch, "rows": run.rows,
            "size": config.size}


def save_checkpoint(run: Run, config: TrainConfig, epoch: int, path: Path) -> None:
    """last.pt: the weights checkpoint and everything else a resume needs."""
    _atomic_torch_save(
        {**weights_checkpoint(run, config, epoch), "training_model": run.model.state_dict(),
         "average_steps": run.average.steps, "optimizer": run.optimizer.state_dict(),
         "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "best": run.best,
         "torch_rng": torch.get_rng_state()},
        path)


def load_checkpoint(run: Run, path: Path, device: str) -> None:
    """Restore ``run`` from a :func:`save_checkpoint` file; training goes on after its epoch."""
    state = torch.load(path, map_location=device, weights_only=False)
    run.model.load_state_dict(state.get("training_model", state["model"]))  # runs before the average kept one
    run.average.model.load_state_dict(state["model"])
    run.average.steps = state.get("average_steps", 0)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:  # checkpoints before the scaler was kept restart its scale (CUDA --amp only)
        run.scaler.load_state_dict(state["scaler"])
    run.next_epoch, run.best, run.rows = state["epoch"] + 1, state["best"], state["rows"]
    torch.set_rng_state(state["torch_rng"])


def train_epoch(run: Run, train_set: FrameDataset, config: TrainConfig, epoch: int, progress: bool) -> dict:
    """One pass over the training frames; returns the log row's training part (mean loss,
    the learning rate of the epoch's first step)."""
    from tqdm import tqdm

    device = config.device
    # --amp: float16 on CUDA (with the scaler), bfloat16 on CPU (no scaler needed: bfloat16
    # keeps float32's exponent range).
    amp_dtype = torch.float16 if device == "cuda" else torch.bfloat16
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    optimizer = run.optimizer
    set_training_mode(run.model, config.freeze_encoder)
    train_set.set_epoch(epoch)
    # each item's augmentation is seeded by (seed, epoch, index), so the workers change nothing but the speed
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, num_workers=config.workers,
                        pin_memory=device == "cuda", generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
    losses = []
    scheduled = run.scheduler.get_last_lr()
    for step, (images, masks, standard) in enumerate(
            tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress)):
        global_step = epoch * steps_per_epoch + step
        if global_step < warmup_steps:  # linear warm-up on top of the cosine schedule
            for group, lr in zip(optimizer.param_groups, scheduled):
                group["lr"] = lr * (global_step + 1) / (warmup_steps + 1)
        elif global_step == warmup_steps and warmup_steps:
            for group, lr in zip(optimizer.param_groups, scheduled):
                group["lr"] = lr
        if step == 0:
            first_lr = optimizer.param_groups[0]["lr"]  # logged: the warm-up and schedule can be read off log.csv
        images = images.to(device, memory_format=torch.channels_last)
        masks, standard = masks.to(device), standard.to(device)
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=config.amp):
            logits, standard_logit = run.model(images)
            loss = loss_fn(logits.float(), masks, standard_logit.float(), standard, config.boundary_weight)
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(optimizer)
        run.scaler.update()
        run.average.update(run.model)
        losses.append(float(loss.detach()))
    for group, lr in zip(optimizer.param_groups, scheduled):
        group["lr"] = lr  # the cosine schedule steps from its own value, never from a warm-up's
    run.scheduler.step()
    return {"train_loss": float(np.mean(losses)), "lr": first_lr}


def record(run: Run, row: dict, figures: dict, out: Path) -> None:
    """Add an epoch's row (training part and validation figures) to the log and the curves."""
    row.update({k: figures.get(k) for k in LOG_COLUMNS if k not in row})
    run.rows.append(row)
    _write_log(out / "log.csv", run.rows)
    plot_curves(run.rows, out / "curves.png")


class TrainingOptionError(ValueError):
    """An option makes no sense (the message names it and says what to give); raised
    before anything is built or written."""


def _check(config: TrainConfig) -> TrainConfig:
    """Options refused before anything is built or written; a refit's splits."""
    if config.size < 32 or config.size % 32:
        raise TrainingOptionError(f"--size must be a multiple of 32 (the network halves it five times), got {config.size}")
    if config.val_every < 1:
        raise TrainingOptionError(f"--val-every must be at least 1, got {config.val_every}")
    if config.warmup_epochs < 0:
        raise TrainingOptionError(f"--warmup-epochs must be at least 0, got {config.warmup_epochs}")
    for size, epochs in config.progressive:
        if size < 32 or size % 32 or epochs < 1:
            raise TrainingOptionError(f"--progressive takes sizes that are multiples of 32 and at least one epoch each, "
                                      f"got {size}:{epochs}")
    if config.progressive and sum(epochs for _, epochs in config.progressive) >= config.epochs:
        raise TrainingOptionError(f"--progressive must leave epochs at the full size {config.size}: its "
                                  f"{sum(e for _, e in config.progressive)} epochs are not fewer than --epochs {config.epochs}")
    for first, last, times in config.repeat:
        if not isinstance(times, int) or isinstance(times, bool) or not 2 <= times <= 20:
            raise TrainingOptionError(f"--repeat {first}-{last}={times}: give each block a whole number of times from 2 to 20")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible; use --device cpu")
    if config.amp and config.device == "cpu" and not cpu_has_bfloat16():
        warnings.warn("--amp on this CPU: it has no native bfloat16 (AVX512-BF16 or AMX), so mixed precision will "
                      "be slower than float32; leave --amp off", stacklevel=3)
    if config.refit:
        config = replace(config, train_splits=sorted({*config.train_splits, *config.val_splits}), val_splits=[])
    return config


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) into ``config.out``; returns the best validation figures.

    The steps: build the run (fine-tuning: from the checkpoint's weights), restore it from
    ``last.pt`` when resuming, measure the starting weights when fine-tuning, then per
    epoch train, validate (every ``val_every`` epochs and after the last), log, keep
    ``best.pt`` when the PSFHS score improves (a refit: after the last epoch) and save
    ``last.pt``.
    """
    config = _check(config)
    init_state = None
    if config.init_from:
        config, init_state = _from_checkpoint(config)
    out = Path(config.out)
    seed_everything(config.seed)
    device = config.device
    run = build_run(config, init_state)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    train_sets: dict[int, FrameDataset] = {}

    def train_set_at(size: int) -> FrameDataset:
        if size not in train_sets:
            train_sets[size] = FrameDataset(config.data, tuple(config.train_splits), size, augment=True, seed=config.seed,
                                            repeat=[tuple(r) for r in config.repeat])
            if config.workers:
                train_sets[size].preload()  # the workers are forked every epoch: they inherit the decoded frames
        return train_sets[size]

    train_set_at(size_at(config, 0))  # a split without cases fails here, before RUN_DIR exists
    # validated as `iugc baseline predict` predicts (smoothed), so the best epoch is the best for prediction
    val_set = None if config.refit else FrameDataset(config.data, tuple(config.val_splits), config.size, smooth=SMOOTH)
    truths: dict = {}
    last = out / "last.pt"
    if config.resume and last.is_file():
        load_checkpoint(run, last, device)
    out.mkdir(parents=True, exist_ok=True)  # only now: a bad option or encoder above leaves no RUN_DIR behind
    (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    if init_state is not None and run.next_epoch == 0 and val_set is not None:
        # the starting weights are the ones to beat: a fine-tune that only hurts leaves them as best.pt
        began = time.time()
        figures = validate(run.average.model, val_set, device, truths)
        record(run, {"epoch": 0, "train_loss": None, "seconds": round(time.time() - began, 2)}, figures, out)
        if figures.get("psfhs_score") is not None:
            run.best = dict(run.rows[-1])
            _atomic_torch_save(weights_checkpoint(run, config, -1), out / "best.pt")
    for epoch in range(run.next_epoch, config.epochs):
        began = time.time()
        row = {"epoch": epoch + 1, **train_epoch(run, train_set_at(size_at(config, epoch)), config, epoch, progress)}
        validating = val_set is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs)
        figures = validate(run.average.model, val_set, device, truths) if validating else {}
        row["seconds"] = round(time.time() - began, 2)
        record(run, row, figures, out)
        score = figures.get("psfhs_score")
        if (score is not None and score > run.best["psfhs_score"]) or (config.refit and epoch + 1 == config.epochs):
            run.best = dict(run.rows[-1])
            _atomic_torch_save(weights_checkpoint(run, config, epoch), out / "best.pt")
        save_checkpoint(run, config, epoch, last)
    return run.best
