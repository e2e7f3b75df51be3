"""`iugc baseline`: train, fine-tune and predict with the reference network."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from iugc.common.options import Number, SEED, count


FINETUNE_LR = 3e-4  # chosen in the second-scanner fine-tuning study (docs/baseline.md, "Fine-tuning")


def _train_options(f, *, finetune: bool = False):
    """The options train and finetune share; architecture options only for training from
    scratch (fine-tuning keeps the checkpoint's), and fine-tuning's own learning rate."""
    options = [
        click.option("--data", required=True, type=click.Path(path_type=Path), help="Canonical dataset with train/validation splits (`iugc data split`)."),
        click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="RUN_DIR: log.csv, curves.png, last.pt, best.pt."),
        click.option("--epochs", type=count(10_000), default=10 if finetune else 40, show_default=True),
        click.option("--batch-size", type=count(4096), default=16, show_default=True),
        click.option("--lr", type=Number(min=0, max=10, min_open=True), default=FINETUNE_LR if finetune else 1e-3, show_default=True,
                     help="Peak learning rate (AdamW, cosine schedule)."),
        click.option("--warmup-epochs", type=Number(min=0), default=1.0 if finetune else 0.0, show_default=True,
                     help="Epochs over which the learning rate rises linearly to --lr."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--amp", is_flag=True, help="Mixed precision: float16 on CUDA, bfloat16 on CPU (about 2x faster on CPUs with AVX512-BF16 or AMX; slower elsewhere, with a warning)."),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--resume", is_flag=True, help="Continue from RUN_DIR/last.pt after a kill."),
        click.option("--ema-decay", type=Number(0, 1, max_open=True), default=0.99, show_default=True,
                     help="Validate and save an exponential moving average of the weights (0: the raw weights)."),
        click.option("--workers", type=count(64, least=0), default=0, show_default=True,
                     help="DataLoader processes preparing augmented batches (a GPU waits on them; same results as 0)."),
        click.option("--val-every", type=count(10_000), default=1, show_default=True,
                     help="Validate every N epochs (and after the last); the best checkpoint is chosen among these."),
        click.option("--boundary-weight", type=Number(0, 100), default=0.0, show_default=True,
                     help="Weigh the cross-entropy within 2 px of a label edge 1+W times (0: plain cross-entropy)."),
        click.option("--style-noise", type=Number(0, 1), default=0.0, show_default=True,
                     help="Probability per training step of perturbing the shallow encoder features' per-channel "
                          "mean and spread (DSU; against a new scanner's look; ResNet encoders; 0: off)."),
    ]
    if not finetune:
        options += [
            click.option("--size", type=click.IntRange(64, 2048), default=256, show_default=True, help="Network input size (multiple of 32)."),
            click.option("--encoder", "encoder_name", default="resnet18", show_default=True,
                         help="smp encoder name (the shipped weights: resnet18; the issue's plain reference: resnet34)."),
            click.option("--encoder-weights", default=None, help="Pretrained encoder weights to download (e.g. imagenet); default: from scratch."),
            click.option("--decoder-channels", default="128,64,32,16,8", show_default=True,
                         help="Decoder widths, one per encoder stage (smp's default, 256,128,64,32,16, is slower on CPU)."),
            click.option("--progressive", default="", metavar="SIZE:EPOCHS,...",
                         help="Progressive resizing: train the first epochs at smaller sizes, e.g. 128:8,192:8 (8 epochs at "
                              "128 px, 8 at 192, the rest at --size); cheaper epochs, see docs/baseline.md."),
            click.option("--repeat", default="", metavar="FIRST-LAST=N,...",
                         help="Show the training frames of these id blocks N times per epoch (generated frames follow "
                              "the frame they were made from), e.g. 04302-04401=3 to weigh the second PSFHS scanner "
                              "three times; validation is unchanged."),
            click.option("--refit", is_flag=True,
                         help="Train on the train and validation splits together, with no validation; RUN_DIR/best.pt is "
                              "the weight average after the last epoch (give --epochs of the split run it refits)."),
        ]
    for option in reversed(options):
        f = option(f)
    return f


def _check_device(device: str) -> None:
    """--device cuda on a machine without a visible CUDA GPU: one line, before any work."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("no CUDA GPU is visible on this machine (torch.cuda.is_available() is False); use --device cpu",
                                     param_hint="--device")


def _check_training_data(data: Path, *, validation: bool = True) -> None:
    """The dataset exists, has a valid manifest, a train split and (unless refitting) a
    validation split."""
    from iugc.data_manifest.manifest import ManifestError, load_manifest

    try:
        manifest = load_manifest(data)
    except ManifestError as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from None
    counts = {name: sum(1 for c in manifest.cases if c.split == name) for name in ("train", "validation", "unassigned")}
    missing = [name for name in ("train", "validation")[: 2 if validation else 1] if counts[name] == 0]
    if missing:
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise click.BadParameter(
            f"{data} has no {' and no '.join(missing)} cases ({shown}); assign splits first, e.g. "
            f"`iugc data split {data} --blocks train=03744-04300,validation=04301-04401`", param_hint="--data")


def _config(options: dict):
    from iugc.baseline.train import TrainConfig

    _check_device(options["device"])
    _check_training_data(Path(options["data"]), validation=not options.get("refit"))
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    if "decoder_channels" not in options:  # fine-tuning: the checkpoint's architecture replaces these
        return TrainConfig(**options)
    try:
        channels = [int(c) for c in options.pop("decoder_channels").split(",")]
    except ValueError:
        raise click.BadParameter("expected integers separated by commas", param_hint="--decoder-channels") from None
    text = options.pop("progressive")
    try:
        progressive = [[int(n) for n in part.split(":")] for part in text.split(",")] if text else []
        if any(len(pair) != 2 for pair in progressive):
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected SIZE:EPOCHS pairs separated by commas, e.g. 128:8,192:8; got {text[:60]!r}",
                                 param_hint="--progressive") from None
    repeat = _repeat(options.pop("repeat"))
    return TrainConfig(**options, decoder_channels=channels, encoder_depth=len(channels), progressive=progressive, repeat=repeat)


def _repeat(text: str) -> list[list]:
    """``"04302-04401=3,..."`` -> ``[["04302", "04401", 3], ...]``, or a usage error saying what to write.

    >>> _repeat("04302-04401=3"), _repeat("")
    ([['04302', '04401', 3]], [])
    """
    import re

    from iugc.data_manifest.split import in_block

    blocks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([\w.]+)-([\w.]+)=(\d+)", part)
        if not match:
            raise click.BadParameter(f"expected FIRST-LAST=N blocks separated by commas, e.g. 04302-04401=3; got {part[:60]!r}",
                                     param_hint="--repeat")
        first, last, times = match.group(1), match.group(2), int(match.group(3))
        if not in_block(first, first, last):
            raise click.BadParameter(f"the block {first}-{last} is reversed: write {last}-{first}", param_hint="--repeat")
        blocks.append([first, last, times])
    return blocks


@click.group("baseline")
def baseline_group() -> None:
    """The reference multi-task network (U-Net + standard-plane head)."""


@baseline_group.command("train")
@_train_options
def train_cmd(**options):
    """Train from scratch; validation through the evaluator every epoch, best by PSFHS score."""
    from iugc.baseline.train import TrainingOptionError, train

    try:
        best = train(_config(options))
    except TrainingOptionError as exc:
        raise click.ClickException(str(exc)) from None
    if options["refit"]:
        click.echo(f"refit: {options['out']}/best.pt holds the weight average after epoch {best.get('epoch')}")
    else:
        click.echo(f"best epoch {best.get('epoch')}: PSFHS score {best.get('psfhs_score')}, Dice {best.get('dice')}")


@baseline_group.command("finetune")
@partial(_train_options, finetune=True)
@click.option("--from", "init_from", required=True,
              help="'default' (the shipped weights) or a checkpoint (RUN_DIR/best.pt); its architecture and input size are kept.")
@click.option("--freeze-encoder", is_flag=True, help="Train only the decoder and heads.")
def finetune_cmd(**options):
    """Fine-tune the shipped weights or a checkpoint on your own data.

    Import your data first (`iugc data import`, any supported layout) and split it
    (`iugc data split`); the checkpoint's architecture and input size are kept. The
    starting weights are measured on the validation split first (epoch 0 in log.csv) and
    stay RUN_DIR/best.pt unless an epoch beats them.
    """
    from iugc.baseline.train import TrainingOptionError, train

    try:
        best = train(_config(options))
    except (FileNotFoundError, TrainingOptionError) as exc:
        raise click.ClickException(str(exc)) from None
    if best.get("epoch") == 0:
        click.echo(f"no epoch beat the starting weights (PSFHS score {best.get('psfhs_score')}): best.pt holds them unchanged")
    else:
        click.echo(f"best epoch {best.get('epoch')}: PSFHS score {best.get('psfhs_score')}")


@baseline_group.command("export")
@click.option("--weights", default="default", show_default=True, help="'default' (shipped) or a checkpoint path.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "fp16", "int8"]), default="onnx", show_default=True,
              help="onnx: for ONNX Runtime (what the submission container runs); fp16 / int8: compact weights to ship "
                   "(int8: convolution weights per output channel, a quarter of float32).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The file to write (.onnx or .pt).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export_cmd(weights, fmt, out, force):
    """Export the network for ONNX Runtime, or as compact fp16/int8 weights (no optimizer state)."""
    from iugc.baseline.export import export_onnx, export_release

    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; choose another --out, or pass --force to replace it")
    try:
        if fmt == "onnx":
            export_onnx(weights, out)
        else:
            export_release(weights, out, precision=fmt)
    except (FileNotFoundError, ValueError) as exc:  # a missing file, or one that is not a checkpoint
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}")


@baseline_group.command("predict")
@click.option("--input", "input_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder of frames (.png, .mha, .nii.gz) and/or .avi clips (every frame, ids <video>_<frame>).")
@click.option("--output", "output_dir", required=True, type=click.Path(path_type=Path), help="Where masks and predictions.json go.")
@click.option("--weights", multiple=True, default=["default"], show_default=True,
              help="'default' (shipped) or a checkpoint path; repeat it to average several networks (an ensemble, "
                   "same input size; as slow as its members together).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--flip", is_flag=True, help="Test-time flip augmentation.")
@click.option("--complete/--no-complete", default=True, show_default=True,
              help="On a frame the classification head judges standard, give a structure the argmax missed the region "
                   "where it is most likely.")
@click.option("--largest-component/--no-largest-component", default=True, show_default=True, help="Keep only the largest component per structure.")
@click.option("--fill-holes/--no-fill-holes", default=True, show_default=True, help="Fill holes inside each structure.")
@click.option("--ellipse-head/--no-ellipse-head", default=True, show_default=True,
              help="Replace the fetal head by the ellipse fitted to its convex outline (a shape prior).")
@click.option("--ellipse-ps/--no-ellipse-ps", default=True, show_default=True,
              help="Replace the pubic symphysis by the ellipse fitted to its convex outline (a shape prior for its axis).")
@click.option("--smooth", type=Number(min=0, max=100), default=None,
              help="Gaussian sigma (network pixels) with which each frame is smoothed before the network; 0: none "
                   "[default: 1.0, against a new scanner's finer speckle; see the model card].")
@click.option("--adapt-bn", is_flag=True,
              help="First re-estimate the BatchNorm statistics on the input frames (AdaBN: label-free adaptation to a "
                   "scanner the network was not trained on; each prediction then depends on the whole folder; at least 8 frames).")
@click.option("--standard-from", type=click.Choice(["head", "mean", "segmentation"]), default="head", show_default=True,
              help="Where p(standard plane) comes from: 'head': the network's classification head; 'segmentation' "
                   "applies the IUGC rule (both PS and FH visible) to the masks, the lower of the two structures' highest "
                   "probability; 'mean': the mean of the two (better on a scanner training never saw; see the model "
                   "card). Masks are the same.")
def predict_cmd(input_dir, output_dir, weights, device, flip, complete, largest_component, fill_holes, ellipse_head, ellipse_ps,
                smooth, adapt_bn, standard_from):
    """Write <case_id>.png masks (0/1/2, input size) and predictions.json (p, AoP, HSD).

    Interrupted (Ctrl-C, SIGINT, SIGTERM), it removes the masks it wrote and exits 130."""
    from iugc.baseline.frames import SMOOTH
    from iugc.baseline.postprocess import Steps
    from iugc.baseline.predict import predict_folder

    _check_device(device)
    if output_dir.exists() and not output_dir.is_dir():
        raise click.BadParameter(f"{output_dir} is a file; give a folder for the masks and predictions.json", param_hint="--output")
    try:
        steps = Steps(complete=complete, largest=largest_component, holes=fill_holes, ellipse=ellipse_head, ellipse_ps=ellipse_ps,
                      standard_from=standard_from)
        summary = predict_folder(input_dir, output_dir, list(weights), device, flip, steps=steps, adapt_bn=adapt_bn,
                                 smooth=SMOOTH if smooth is None else smooth)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for case, error in summary["errors"].items():
        click.echo(f"case {case}: {error}", err=True)
    click.echo(f"predicted {summary['predicted']} frames into {output_dir}")


@click.command("build-baseline")
@click.option("--weights", default="default", show_default=True, help="'default' (shipped), a checkpoint (.pt) or an exported .onnx.")
@click.option("--force", is_flag=True, help="Rebuild even if nothing changed.")
def build_baseline_cmd(weights, force):
    """Build iugc/baseline:latest: the baseline's ONNX model with ONNX Runtime on
    iugc/base:latest, non-root, no PyTorch, built with no network (wheels are fetched on
    the host with pip first). The reference entry and the template teams copy."""
    import tempfile

    from iugc.baseline.export import export_onnx
    from iugc.baseline.image import BASELINE_IMAGE, build_baseline
    from iugc.evaluator.evaluate import default_cache_dir
    from iugc.sandbox.exceptions import RetryableError

    cache = default_cache_dir().parent
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(weights) if str(weights).endswith(".onnx") else export_onnx(weights, Path(tmp) / "model.onnx")
            image_id, built = build_baseline(model, cache=cache, force=force)
    except (FileNotFoundError, ValueError, RetryableError) as exc:  # ValueError: a file that is not a checkpoint
        raise click.ClickException(str(exc)) from None
    click.echo(f"{BASELINE_IMAGE} {image_id[:19]} ({'built' if built else 'up to date'})")
