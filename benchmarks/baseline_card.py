"""Validation figures of baseline weights, for the model card, through the CLI a user runs
(`iugc baseline predict` + `iugc evaluate`), pooled and per scanner, with each
prediction-time switch.

    python benchmarks/baseline_card.py [--weights default] [--json out.json] [--variants all|default]

Validation block of the development split (`iugc data split --blocks` BLOCKS below): each
scanner's last clips, the first scanner's ids 04206-04301 (96 frames) and the second's
04344-04401 (58), 154 real standard planes for segmentation and biometry, plus the
non-standard frames generated from them (`iugc data nonstandard --per-frame 0.5`, seed 0)
for classification. Needs ../shared/data/psfhs.
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
    "default, p(standard) the mean of the head's and the segmentation's": ["--standard-from", "mean"],
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


BLOCKS = "train=03744-04205+04302-04343,validation=04206-04301+04344-04401"
# the scanners' parts of the validation block (ids 03744-04301 show the first scanner's grey-scale bar)
GROUPS = {"pooled": ("04206", "04401"), "first scanner": ("04206", "04301"), "second scanner": ("04344", "04401")}


def prepare(work: Path) -> tuple[Path, Path]:
    """The validation block's subsets in ``work`` (made once, then reused), the real frames
    with IUGC 2025 landmarks derived from their masks (`iugc data landmarks`)."""
    real, every = split_subsets(make_dataset(work, BLOCKS), work, "validation")
    if '"aop_landmarks": {' not in (real / "manifest.json").read_text():
        iugc("data", "landmarks", str(real))
    return real, every


def group_files(work: Path, dataset: Path, *, landmarks: bool = False) -> dict[str, Path]:
    """For each group, a `--cases` file of ``dataset``'s case ids whose source frame lies in
    the group's id range (generated frames, ``04210_ns0``, follow their source frame);
    ``landmarks``: only the cases with landmark truth."""
    cases = json.loads((dataset / "manifest.json").read_text())["cases"]
    ids = [c["case_id"] for c in cases if c.get("aop_landmarks") or not landmarks]
    files = {}
    for group, (first, last) in GROUPS.items():
        path = work / f"cases-{dataset.name}{'-landmarks' if landmarks else ''}-{group.replace(' ', '-')}.txt"
        path.write_text("".join(f"{i}\n" for i in ids if first <= i[:5] <= last))
        files[group] = path
    return files


def figures(work: Path, weights: str, flags: list[str], name: str) -> dict[str, dict]:
    """Figures of ``weights`` predicted with ``flags``, for each of :data:`GROUPS`."""
    real, every = prepare(work)
    preds = work / f"preds-{abs(hash(name)) % 10**8}"
    shutil.rmtree(preds, ignore_errors=True)
    iugc("baseline", "predict", "--input", str(every / "images"), "--output", str(preds), "--weights", weights, *flags)
    real_groups, every_groups, pointed = group_files(work, real), group_files(work, every), group_files(work, real, landmarks=True)
    out = {}
    for group in GROUPS:
        out[group] = one_group(work, preds, real, every, real_groups[group], every_groups[group], pointed[group])
    shutil.rmtree(preds, ignore_errors=True)
    return out


def one_group(work: Path, preds: Path, real: Path, every: Path, real_cases: Path, every_cases: Path, pointed: Path) -> dict:
    out = {}
    for challenge, data, cases, tag in (("psfhs2023", real, real_cases, "ellipse"), ("iugc2024", real, real_cases, "contour"),
                                        ("iugc2024", every, every_cases, "all"), ("iugc2025", real, pointed, "landmarks")):
        result_path = work / f"r-{tag}.json"
        iugc("evaluate", "--predictions", str(preds), "--ground-truth", str(data), "--challenge", challenge,
             "--cases", str(cases), "--out", str(result_path), "--quiet", "--no-cache")
        result = json.loads(result_path.read_text())
        agg = result["aggregates"]
        if tag == "ellipse":
            out.update({k: agg[k] for k in ("dice_ps", "dice_fh", "dice_all", "hd", "asd")})
            out["aop_error_ellipse"] = agg["aop_error"]
            out["psfhs_score"] = result["score"]
            out["n_real"] = agg["n_cases"]
        elif tag == "contour":
            out["aop_error_contour"] = agg["aop_error"]
            out["hsd_error"] = agg["hsd_error"]
        elif tag == "all":
            out.update({k: agg[k] for k in ("accuracy", "auc", "f1", "mcc")})
            out["n_classification"] = agg["n_cases"]
        else:
            out["mre"] = agg["mre"]  # its AoP error is the contour one: derived landmarks are the contour construction's points
    return out


KEYS = ("dice_ps", "dice_fh", "dice_all", "hd", "asd", "aop_error_ellipse", "aop_error_contour", "hsd_error", "psfhs_score",
        "accuracy", "auc", "f1", "mcc", "mre")
SUMMARY_KEYS = {"dice_all": "Dice (all)", "hd": "HD (px)", "asd": "ASD (px)", "aop_error_ellipse": "dAoP ellipse (deg)",
                "aop_error_contour": "dAoP contour (deg)", "hsd_error": "dHSD (px)", "psfhs_score": "PSFHS score",
                "accuracy": "accuracy", "auc": "AUC", "mre": "IUGC 2025 MRE (px)"}
WEIGHTS = ROOT / "baseline" / "weights"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_card(meta: dict) -> str:
    """MODEL_CARD.md from baseline.json (the test checks they agree)."""
    t, held = meta["training"], meta["held_out"]
    default = held["variants"][next(iter(held["variants"]))]
    lines = [
        "# Baseline weights: model card", "",
        "## Summary", "",
        f"- **File**: `baseline/weights/{meta['file']}` ({meta['bytes'] / 2**20:.1f} MB, {meta['precision']}), "
        f"sha256 `{meta['sha256']}`, {meta['date']}.",
        f"- **Network**: {meta['architecture']}.",
        f"- **What it saw**: {t['shipped_saw']}",
        f"- **Held-out figures** ({held['what']}; `iugc baseline predict` + `iugc evaluate` with the defaults):", "",
        "| | " + " | ".join(SUMMARY_KEYS.values()) + " |",
        "|---|" + "---|" * len(SUMMARY_KEYS),
    ]
    for group, figures in default.items():
        lines.append(f"| {group} ({figures['n_real']} frames) | " + " | ".join(_cell(figures[k]) for k in SUMMARY_KEYS) + " |")
    lines += [
        "",
        f"- **Speed**: {meta['speed']}",
        "- **Train it yourself** (the data prepared as `docs/baseline.md` says):",
        f"  - split run: `{t['split_command']}`",
        f"  - refit on every frame: `{t['refit_command']}`",
        f"  - then: `iugc baseline export --format {meta['precision']} --weights RUN_DIR/best.pt --out baseline/weights/{meta['file']}`",
        f"- **Against the bar**: {meta['assessment']}",
        "",
        "## Training", "",
        f"- Data: {t['data']}", f"- Seed: {t['seed']}; device: {t['device']}",
        f"- Split run: {t['split_epochs']} epochs, best epoch by validation PSFHS score: {t['best_epoch']}",
        f"- Shipped: {t['shipped']}", "",
        "## The shipped file on the validation block (`python benchmarks/baseline_card.py --variants default`)", "",
        meta["shipped_note"], "",
        "| | " + " | ".join(KEYS) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for group, figures in meta["shipped_on_validation"].items():
        lines.append(f"| {group} | " + " | ".join(_cell(figures[k]) for k in KEYS) + " |")
    lines += ["", "## Prediction-time switches, held out (`python benchmarks/baseline_card.py`)", "",
              meta["validation_note"], "",
              "| variant | group | " + " | ".join(KEYS) + " |",
              "|---|---|" + "---|" * len(KEYS)]
    for name, groups in held["variants"].items():
        for group, figures in groups.items():
            lines.append(f"| {name} | {group} | " + " | ".join(_cell(figures[k]) for k in KEYS) + " |")
    lines.append("")
    if meta.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in meta["notes"]] + [""]
    lines += ["The method, the cheaper-epoch study and the lab notes of earlier weights: [docs/baseline.md](../../docs/baseline.md).", ""]
    return "\n".join(lines)


def write_card(args, held_out: dict, shipped: dict) -> None:
    import datetime
    import hashlib

    import torch

    path = WEIGHTS / "baseline.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["model_config"]
    log = csv_rows(args.training_log)
    meta = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "precision": "int8" if "int8_scales" in state else "fp16",
        "date": datetime.date.today().isoformat(),
        "architecture": (f"smp U-Net, encoder {config['encoder_name']} (from scratch, depth {config['encoder_depth']}), "
                         f"decoder {tuple(config['decoder_channels'])}, auxiliary classification head, input {state['size']}x{state['size']} grey"),
        "training": {
            "data": ("the 658 PSFHS frames (two scanners), split by clips as " + f"`iugc data split --blocks {BLOCKS}` "
                     "(504 train, 154 validation), each with half as many non-standard frames generated from it "
                     "(`iugc data nonstandard --per-frame 0.5 --seed 0`)"),
            "split_command": args.train_command, "refit_command": args.refit_command,
            "seed": args.seed, "device": args.device,
            "split_epochs": len(log), "best_epoch": max(log, key=lambda r: float(r["psfhs_score"] or "-inf"))["epoch"] if log else None,
            "shipped": args.shipped_how, "shipped_saw": args.shipped_saw,
        },
        "held_out": {"what": args.held_out_what, "variants": held_out},
        "shipped_on_validation": shipped,
        "shipped_note": args.shipped_note,
        "validation_note": ("Each variant changes one thing of the default prediction, on the split run's weights (held out). "
                            "Segmentation and biometry on the real frames (Dice/HD/ASD/dAoP ellipse: psfhs2023; dAoP contour "
                            "and dHSD: iugc2024); classification on the real and generated frames; mre: iugc2025, the "
                            "landmarks `iugc baseline predict` writes against those derived from the expert masks (`iugc data "
                            "landmarks`), whose AoP error is the contour one by construction. HD, ASD and MRE in pixels, "
                            "angles in degrees."),
        "speed": args.speed,
        "assessment": args.assessment,
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
    parser.add_argument("--held-out", type=Path, default=None,
                        help="With --write-card: the --json of an earlier run on the split run's weights (the held-out figures).")
    parser.add_argument("--shipped", type=Path, default=None,
                        help="With --write-card: the --json of an earlier run on the shipped file (else measured now).")
    parser.add_argument("--training-log", type=Path, default=None, help="The split run's RUN_DIR/log.csv.")
    for option in ("train-command", "refit-command", "device", "assessment", "speed", "held-out-what", "shipped-saw",
                   "shipped-note"):
        parser.add_argument(f"--{option}", default="")
    parser.add_argument("--shipped-how", default="", help="Which run's weights the file holds (for the card).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", action="append", default=[], help="A line for the card's notes (repeatable).")
    args = parser.parse_args()
    args.work = args.work.resolve()  # the iugc commands run in the checkout: relative paths would point there
    if args.weights != "default":
        args.weights = str(Path(args.weights).resolve())
    if args.write_card and args.held_out is None:
        parser.error("--write-card needs --held-out (the split run's figures, from --json)")
    names = list(VARIANTS) if args.variants == "all" else list(VARIANTS)[:1]
    results = {}
    print(f"weights {args.weights}; validation block of {BLOCKS} ({'|'.join(KEYS)})")
    if not (args.write_card and args.shipped):
        for name in names:
            results[name] = figures(args.work, args.weights, VARIANTS[name], name)
            for group, values in results[name].items():
                print(f"{name[:40]:<42}{group:<16}" + " ".join(_cell(values[k]) for k in KEYS), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.write_card:
        shipped = json.loads(args.shipped.read_text()) if args.shipped else results
        write_card(args, json.loads(args.held_out.read_text()), shipped[list(VARIANTS)[0]])


if __name__ == "__main__":
    main()
