"""``iugc evaluate``, ``iugc biometry`` and ``iugc rank``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from challenge.definition import DefinitionError, available_challenges, load_challenge


def _challenge(name: str):
    try:
        return load_challenge(name)
    except DefinitionError as exc:
        raise click.BadParameter(str(exc), param_hint="--challenge") from None


def _fmt(value, width: int = 9) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.4f}".rjust(width)
    return str(value).rjust(width)


@click.command("evaluate")
@click.option("--predictions", required=True, type=click.Path(path_type=Path), help="Folder of <case_id>.png|.mha|.nii.gz masks (+ optional predictions.json).")
@click.option("--ground-truth", required=True, type=click.Path(path_type=Path), help="Dataset from `iugc data import` or a folder of truth masks.")
@click.option("--challenge", "challenge_name", required=True, help=f"Challenge name ({', '.join(available_challenges())}) or a definition .yaml.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Result JSON to write (atomically).")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: all usable cores).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Truth-biometry cache (default: $IUGC_CACHE_DIR or ~/.cache/iugc).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the truth-biometry cache.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def evaluate_cmd(predictions, ground_truth, challenge_name, out, jobs, cache_dir, no_cache, quiet):
    """Score predicted masks against ground truth with the challenge's official metrics.

    Per case: Dice, Hausdorff distance and average surface distance for PS, FH and their
    union, AoP (and HSD for iugc2024) of prediction and truth and their errors. A missing
    or invalid prediction scores the worst case and is reported on stderr; the run never
    stops for one bad case. Exit status 0 means the evaluation ran.
    """
    from data_manifest.io import atomic_write_text
    from data_manifest.manifest import ManifestError
    from evaluator.evaluate import EvaluationInputError, default_cache_dir, evaluate_folder

    challenge = _challenge(challenge_name)
    cache = None if no_cache else (cache_dir or default_cache_dir())
    try:
        result = evaluate_folder(predictions, ground_truth, challenge, jobs=jobs, cache_dir=cache, progress=not quiet)
    except (EvaluationInputError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from None
    atomic_write_text(out, json.dumps(result, indent=1, allow_nan=False) + "\n")
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    for case_id, case in result["cases"].items():
        if case["error"]:
            click.echo(f"case {case_id}: {case['error']}", err=True)
    if not quiet:
        agg = result["aggregates"]
        click.echo(f"{challenge.name}: {agg['n_cases']} cases, {agg['n_errors']} with errors -> {out}")
        for key in ("dice", "hd", "asd", "aop_error", "hsd_error", "accuracy", "auc", "f1", "mcc"):
            if key in agg:
                click.echo(f"  {key:<10}{_fmt(agg[key])}")
        score = result["score"]
        click.echo(f"  {'score':<10}{_fmt(score)}" + (f"  ({result['score_note']})" if score is None else ""))


@click.command("biometry")
@click.option("--method", type=click.Choice(["contour", "ellipse"]), required=True, help="contour: IUGC 2024; ellipse: PSFHS 2023.")
@click.argument("masks", nargs=-1, required=True, type=click.Path(path_type=Path))
def biometry_cmd(method, masks):
    """Print AoP/HSD of label masks, one JSON object per line.

    Keys: case, aop (degrees), hsd (pixels), ps_endpoints, hsd_point, tangent_point;
    points are [x, y] pixels; null where undefined. An unreadable mask prints an
    object with an "error" and the others go on (exit status 1 at the end).
    """
    from challenge.biometry import biometry
    from data_manifest.io import ReadError, case_id_of, read_mask

    failed = False
    for path in masks:
        case = case_id_of(path) or path.name
        try:
            record = {"case": case, **biometry(read_mask(path), method).to_dict()}
        except ReadError as exc:
            failed = True
            record = {"case": case, "error": str(exc)}
            click.echo(f"error: {exc}", err=True)
        click.echo(json.dumps(record))
    sys.exit(1 if failed else 0)


def _load_results(paths: list[Path]) -> tuple[dict[str, dict], str]:
    results, names = {}, set()
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{path}: not a readable results file ({exc})") from None
        if not isinstance(data, dict) or "cases" not in data or "aggregates" not in data:
            raise click.ClickException(f"{path}: not an `iugc evaluate` result (no cases/aggregates)")
        team = data.get("team") or path.stem
        if team in results:
            raise click.ClickException(f"{path}: team name {team!r} appears twice; rename the file")
        results[team] = data
        names.add(data.get("challenge"))
    if len(names) != 1:
        raise click.ClickException(f"results come from different challenges: {sorted(map(str, names))}")
    return results, names.pop()


@click.command("rank")
@click.argument("results_files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--method", type=click.Choice(["score", "mean-rank"]), default="score", show_default=True, help="score: aggregate-then-rank; mean-rank: rank-then-aggregate.")
@click.option("--bootstrap", "samples", type=int, default=0, help="Add rank stability over N bootstrap resamples of the cases (e.g. 1000).")
@click.option("--wilcoxon", is_flag=True, help="Add pairwise Wilcoxon signed-rank significance ranks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json-out", type=click.Path(path_type=Path), help="Also write the table (and stability) as JSON.")
def rank_cmd(results_files, method, samples, wilcoxon, seed, json_out):
    """Rank teams from `iugc evaluate` results (team = the file's stem or its "team" key)."""
    from data_manifest.io import atomic_write_text
    from evaluator.ranking import bootstrap_ranks, rank_teams, wilcoxon_significance

    results, name = _load_results(list(results_files))
    challenge = _challenge(name)
    rows = rank_teams(results, challenge, method)
    stability = bootstrap_ranks(results, challenge, method, samples, seed, progress=True) if samples else None
    significance = wilcoxon_significance(results, challenge) if wilcoxon else None
    click.echo(format_table(rows, challenge, method, stability, significance))
    if json_out:
        doc = {"challenge": name, "method": method, "rows": rows, "bootstrap": stability, "wilcoxon": significance}
        atomic_write_text(json_out, json.dumps(doc, indent=1) + "\n")


def format_table(rows, challenge, method, stability=None, significance=None) -> str:
    """The ranked table as text: every metric of the challenge, plus stability columns."""
    metric_cols = [m for m in ("dice", "hd", "asd", "aop_error", "hsd_error", "accuracy", "auc", "f1", "mcc") if m in challenge.metrics]
    header = ["rank", "team".ljust(16), "score".rjust(9)]
    if method == "mean-rank":
        header.append("mean_rank".rjust(9))
    header += [m.rjust(9) for m in metric_cols]
    if stability:
        header += ["med_rank".rjust(9), "rank_95%".rjust(9), "P(first)".rjust(9)]
    if significance:
        header.append("sig_rank".rjust(9))
    lines = [" ".join(header)]
    for row in rows:
        cells = [str(row["rank"]).rjust(4), row["team"][:16].ljust(16), _fmt(row["score"])]
        if method == "mean-rank":
            cells.append(_fmt(row["mean_rank"]))
        cells += [_fmt(row.get(m)) for m in metric_cols]
        if stability:
            t = stability["teams"][row["team"]]
            cells += [_fmt(t["median_rank"]), f"{t['p2.5']:.0f}-{t['p97.5']:.0f}".rjust(9), _fmt(t["p_first"])]
        if significance:
            cells.append(_fmt(significance["significance_rank"][row["team"]]))
        lines.append(" ".join(cells))
    if stability:
        tau = stability["kendall_tau"]
        lines.append(
            f"bootstrap: {stability['samples']} resamples of the cases; Kendall's tau vs the full ranking: "
            f"median {_fmt(tau['median'], 0)}, 95% interval {_fmt(tau['p2.5'], 0)} to {_fmt(tau['p97.5'], 0)}"
        )
    if significance:
        lines.append(f"sig_rank: 1 + teams significantly better (pairwise Wilcoxon signed-rank, alpha {significance['alpha']})")
    return "\n".join(lines)
