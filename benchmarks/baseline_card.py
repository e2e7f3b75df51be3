"""Validation figures of baseline weights, for the model card, through the CLI a user runs
(`iugc baseline predict` + `iugc evaluate`), with each post-processing switch and TTA.

    python benchmarks/baseline_card.py [--weights default] [--json out.json] [--variants all|default]

Validation block: PSFHS ids 04301-04401 (101 real standard planes) for segmentation and
biometry, plus the 49 non-standard frames generated from them (`iugc data nonstandard
--per-frame 0.5`, seed 0) for classification (150 frames). Needs ../shared/data/psfhs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PSFHS = ROOT.parent / "shared" / "data" / "psfhs"
VARIANTS = {
    "default (smoothing + completion + largest component + fill holes + ellipse symphysis + ellipse head)": [],
    "no smoothing": ["--smooth", "0"],
    "no ellipse symphysis": ["--no-ellipse-ps"],
    "no smoothing, no ellipse symphysis (the defaults before)": ["--smooth", "0", "--no-ellipse-ps"],
    "no completion": ["--no-complete"],
    "no ellipse head": ["--no-ellipse-head"],
    "no post-processing": ["--no-complete", "--no-largest-component", "--no-fill-holes", "--no-ellipse-ps", "--no-ellipse-head"],
    "largest component only": ["--no-complete", "--no-fill-holes", "--no-ellipse-ps", "--no-ellipse-head"],
    "fill holes only": ["--no-complete", "--no-largest-component", "--no-ellipse-ps", "--no-ellipse-head"],
    "default, p(standard) from the head alone": ["--standard-from", "head"],
    "default, p(standard) from the segmentation alone": ["--standard-from", "segmentation"],
    "default + flip TTA": ["--flip"],
    "default + AdaBN": ["--adapt-bn"],
    "default + AdaBN + flip TTA": ["--adapt-bn", "--flip"],
}


def iugc(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "iugc", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"iugc {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def subset(source: Path, dest: Path, keep) -> Path:
    """A dataset with only the cases ``keep(case)`` accepts (files copied)."""
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["cases"] = [c for c in manifest["cases"] if keep(c)]
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for case in manifest["cases"]:
        for key in ("image", "mask"):
            if case.get(key):
                shutil.copy(source / case[key], dest / case[key])
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dest


def make_dataset(work: Path, blocks: str, *, subset: bool = False) -> Path:
    """PSFHS imported into ``work``, split by id ``blocks`` (as `iugc data split --blocks`;
    ``subset``: the blocks may leave frames out, `--allow-unassigned`), with non-standard
    frames generated from every frame's split (`--per-frame 0.5`, seed 0):
    ``work/psfhs-ns``, reused when it is already there."""
    dataset = work / "psfhs-ns"
    if not (dataset / "manifest.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(work / "psfhs", ignore_errors=True)
        iugc("data", "import", "--layout", "png", "--source", str(PSFHS), "--dest", str(work / "psfhs"))
        iugc("data", "split", str(work / "psfhs"), "--blocks", blocks, *(["--allow-unassigned"] if subset else []))
        iugc("data", "nonstandard", "--source", str(work / "psfhs"), "--dest", str(dataset), "--per-frame", "0.5", "--seed", "0")
    return dataset


def split_subsets(dataset: Path, work: Path, split: str) -> tuple[Path, Path]:
    """``split``'s real frames (``work/val-real``) and all its frames, generated ones
    included (``work/val-all``), as :func:`figures` reads them; reused when already there."""
    real, every = work / "val-real", work / "val-all"
    if not (every / "manifest.json").is_file():
        subset(dataset, real, lambda c: c["split"] == split and "_ns" not in c["case_id"])
        subset(dataset, every, lambda c: c["split"] == split)
    return real, every


def prepare(work: Path) -> tuple[Path, Path]:
    """The validation block's subsets in ``work``; subsets already there are used as they
    are (other benchmarks put other blocks there, through :func:`split_subsets`)."""
    if (work / "val-all" / "manifest.json").is_file():
        return work / "val-real", work / "val-all"
    return split_subsets(make_dataset(work, "train=03744-04300,validation=04301-04401"), work, "validation")


def figures(work: Path, weights: str, flags: list[str], name: str) -> dict:
    real, every = prepare(work)
    preds = work / f"preds-{abs(hash(name)) % 10**8}"
    shutil.rmtree(preds, ignore_errors=True)
    iugc("baseline", "predict", "--input", str(every / "images"), "--output", str(preds), "--weights", weights, *flags)
    out = {}
    for challenge, data, tag in (("psfhs2023", real, "ellipse"), ("iugc2024", real, "contour"), ("iugc2024", every, "all")):
        result_path = work / f"r-{tag}.json"
        iugc("evaluate", "--predictions", str(preds), "--ground-truth", str(data), "--challenge", challenge,
             "--out", str(result_path), "--quiet", "--no-cache")
        result = json.loads(result_path.read_text())
        agg = result["aggregates"]
        if tag == "ellipse":
            out.update({k: agg[k] for k in ("dice_ps", "dice_fh", "dice_all", "hd_ps", "hd_fh", "hd_all", "hd", "asd_all", "asd")})
            out["aop_error_ellipse"] = agg["aop_error"]
            out["psfhs_score"] = result["score"]
            out["n_real"] = agg["n_cases"]
        elif tag == "contour":
            out["aop_error_contour"] = agg["aop_error"]
            out["hsd_error"] = agg["hsd_error"]
        else:
            out.update({k: agg[k] for k in ("accuracy", "auc", "f1", "mcc")})
            out["n_classification"] = agg["n_cases"]
    return out


KEYS = ("dice_ps", "dice_fh", "dice_all", "hd", "asd", "aop_error_ellipse", "aop_error_contour", "hsd_error", "psfhs_score",
        "accuracy", "auc", "f1", "mcc")
WEIGHTS = ROOT / "baseline" / "weights"


def render_card(meta: dict) -> str:
    """MODEL_CARD.md from baseline.json (the test checks they agree)."""
    t = meta["training"]
    lines = [
        "# Baseline weights: model card", "",
        f"`baseline/weights/{meta['file']}` ({meta['bytes'] / 2**20:.1f} MB, {meta['precision']}), sha256 `{meta['sha256']}`.",
        f"Date: {meta['date']}. Architecture: {meta['architecture']}.", "",
        "## Training", "",
        f"- Data: {t['data']}", f"- Command: `{t['command']}`", f"- Seed: {t['seed']}; device: {t['device']}",
        f"- Epochs: {t['epochs']}; best epoch by validation PSFHS score: {t['best_epoch']}",
        f"- Then: `iugc baseline export --format {meta['precision']} --weights RUN_DIR/best.pt --out baseline/weights/{meta['file']}`", "",
        "## Validation block (`python benchmarks/baseline_card.py`)", "",
        meta["validation_note"], "",
        "| variant | " + " | ".join(KEYS) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for name, figures in meta["validation"].items():
        lines.append(f"| {name} | " + " | ".join("-" if figures[k] is None else f"{figures[k]:.4f}" for k in KEYS) + " |")
    lines += ["", "## Against the bar (issue 3)", "", meta["assessment"], ""]
    if meta.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in meta["notes"]] + [""]
    return "\n".join(lines)


def write_card(args, results: dict) -> None:
    import datetime
    import hashlib

    import torch

    path = WEIGHTS / "baseline.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["model_config"]
    log = list(csv_rows(args.training_log))
    default = results[list(VARIANTS)[0]]
    meta = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "precision": "int8" if "int8_scales" in state else "fp16",
        "date": datetime.date.today().isoformat(),
        "architecture": (f"smp U-Net, encoder {config['encoder_name']} (from scratch, depth {config['encoder_depth']}), "
                         f"decoder {tuple(config['decoder_channels'])}, auxiliary classification head, input {state['size']}x{state['size']} grey"),
        "training": {
            "data": ("PSFHS ids 03744-04300 (557 real standard planes) + 280 non-standard frames generated from them "
                     "(`iugc data nonstandard --per-frame 0.5 --seed 0`); validation ids 04301-04401 + 49 generated"),
            "command": args.train_command, "seed": args.seed, "device": args.device,
            "epochs": len(log), "best_epoch": int(state["epoch"]) + 1,
        },
        "validation_note": ("Segmentation and biometry on the 101 real frames (Dice/HD/ASD/dAoP ellipse: psfhs2023; dAoP contour "
                            "and dHSD: iugc2024); classification on the 150 frames (101 standard + 49 generated non-standard), with "
                            "p(standard plane) as `iugc baseline predict` reports it by default (the mean of the head's and the "
                            "segmentation's) unless the row says otherwise. "
                            "HD and ASD in pixels, angles in degrees."),
        "validation": results,
        "assessment": args.assessment or (
            f"Dice(all) {default['dice_all']:.4f} (bar >= 0.92), mean dAoP (ellipse) {default['aop_error_ellipse']:.2f} degrees "
            f"(bar <= 7, goal < 6)."),
        "notes": args.note,
    }
    (WEIGHTS / "baseline.json").write_text(json.dumps(meta, indent=1) + "\n")
    (WEIGHTS / "MODEL_CARD.md").write_text(render_card(meta))


def csv_rows(path):
    import csv

    if path is None:
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "card")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    parser.add_argument("--variants", choices=["all", "default"], default="all")
    parser.add_argument("--write-card", action="store_true", help="Write baseline/weights/baseline.json and MODEL_CARD.md.")
    parser.add_argument("--training-log", type=Path, default=None, help="RUN_DIR/log.csv of the shipped weights (for the card).")
    parser.add_argument("--train-command", default="", help="The training command (for the card).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="")
    parser.add_argument("--assessment", default="")
    parser.add_argument("--note", action="append", default=[], help="A line for the card's notes (repeatable).")
    parser.add_argument("--figures", type=Path, default=None,
                        help="With --write-card: the figures an earlier run wrote with --json for these same weights, "
                             "instead of measuring again (the model-card test re-measures the default row).")
    args = parser.parse_args()
    repeated = sorted({note[:60] for note in args.note if args.note.count(note) > 1})
    if repeated:
        parser.error(f"--note given twice with the same text: {repeated}; the card would repeat it")
    names = list(VARIANTS) if args.variants == "all" else list(VARIANTS)[:1]
    results = json.loads(args.figures.read_text()) if args.figures else {}
    keys = KEYS
    print(f"weights {args.weights}; validation block 04301-04401 ({'|'.join(keys)})")
    for name in names:
        if name not in results:
            results[name] = figures(args.work, args.weights, VARIANTS[name], name)
        print(f"{name:<56}" + " ".join(f"{results[name][k]:.4f}" if results[name][k] is not None else "-" for k in keys), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.write_card:
        write_card(args, results)


if __name__ == "__main__":
    main()
