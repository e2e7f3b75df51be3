"""`iugc demo`: the whole scoring path on real frames (or phantoms) in about a minute.

Imports a few cases, writes degraded copies of the truth that stand in for teams,
evaluates each with the PSFHS 2023 rules and prints the ranked tables.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import cv2
import numpy as np

from iugc.challenge.definition import load_challenge
from iugc.challenge.labels import PS
from iugc.data_manifest.importers import import_dataset
from iugc.common.files import atomic_write_text
from iugc.data_manifest.io import read_mask
from iugc.data_manifest.manifest import load_manifest
from iugc.data_manifest.phantom import write_phantom_dataset
from iugc.evaluator.ranking import format_table
from iugc.evaluator.evaluate import evaluate_folder
from iugc.evaluator.ranking import bootstrap_ranks, rank_teams, wilcoxon_significance

SHARED_PSFHS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "psfhs"
KERNEL = np.ones((3, 3), np.uint8)


def _team_masks(truth: np.ndarray, index: int, rng: np.random.Generator) -> dict[str, np.ndarray | None]:
    """Degraded copies of one truth mask; None means the team submits no mask for it."""
    eroded = cv2.erode(truth, KERNEL, iterations=2)
    shifted = np.roll(cv2.dilate(truth, KERNEL), (2, -3), axis=(0, 1))
    noisy = truth.copy()
    edge = cv2.morphologyEx(truth, cv2.MORPH_GRADIENT, KERNEL) > 0
    flip = edge & (rng.random(truth.shape) < 0.5)
    noisy[flip] = 0
    no_ps = truth.copy()
    if index % 5 == 0:
        no_ps[no_ps == PS] = 0
    return {
        "near-perfect": np.where(rng.random(truth.shape) < 0.0005, 0, truth).astype(np.uint8),
        "ragged-edges": noisy,
        "eroded": eroded,
        "shifted": shifted,
        "forgets-ps": no_ps,
        "misses-cases": None if index % 4 == 0 else eroded,
    }


def run_demo(workdir: Path, data: Path | None, n_cases: int) -> None:
    workdir = Path(workdir)
    for sub in ("source", "truth", "predictions", "results"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    data = data or (SHARED_PSFHS if SHARED_PSFHS.is_dir() else None)
    truth_dir = workdir / "truth"
    if data is not None:
        click.echo(f"demo data: {n_cases} real PSFHS cases from {data}")
        source = workdir / "source"
        for sub in ("images", "masks"):
            (source / sub).mkdir(parents=True)
            for path in sorted((Path(data) / sub).glob("*.png"))[:n_cases]:
                (source / sub / path.name).symlink_to(path.resolve())
        import_dataset("png", source, truth_dir, name="demo-psfhs")
    else:
        click.echo(f"demo data: {n_cases} SYNTHETIC phantom cases (../shared/data/psfhs not found)")
        write_phantom_dataset(truth_dir, n_cases, seed=0, nonstandard_fraction=0.0)
    manifest = load_manifest(truth_dir)
    rng = np.random.default_rng(0)
    for index, case in enumerate(manifest.cases):
        truth = read_mask(truth_dir / case.mask)
        for team, mask in _team_masks(truth, index, rng).items():
            folder = workdir / "predictions" / team
            folder.mkdir(parents=True, exist_ok=True)
            if mask is not None:
                cv2.imwrite(str(folder / f"{case.case_id}.png"), mask)
    challenge = load_challenge("psfhs2023")
    results = {}
    for folder in sorted((workdir / "predictions").iterdir()):
        result = evaluate_folder(folder, truth_dir, challenge, progress=False, cache_dir=workdir / "cache")
        click.echo(f"evaluated {folder.name}: score {result['score']:.4f}")
        result["team"] = folder.name
        atomic_write_text(workdir / "results" / f"{folder.name}.json", json.dumps(result, indent=1) + "\n")
        results[folder.name] = result
    synthetic = " (SYNTHETIC phantoms)" if manifest.synthetic else ""
    click.echo(f"\nPSFHS 2023 ranking, aggregate-then-rank on the score{synthetic}:")
    stability = bootstrap_ranks(results, challenge, "score", 200, seed=0)
    significance = wilcoxon_significance(results, challenge)
    click.echo(format_table(rank_teams(results, challenge, "score"), challenge, "score", stability, significance))
    click.echo(f"\nrank-then-aggregate (mean rank over {', '.join(challenge.ranking.mean_rank_metrics)}):")
    click.echo(format_table(rank_teams(results, challenge, "mean-rank"), challenge, "mean-rank"))
    click.echo(f"\nresults: {workdir / 'results'}; rank them yourself with `iugc rank {workdir / 'results'}/*.json --bootstrap 1000`")
