"""``iugc evaluate``, ``iugc biometry`` and ``iugc rank``; the option helpers ``iugc evaluate-image``
(sandbox/cli.py) shares with them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from iugc.common.options import SEED, count
from iugc.challenge.definition import DefinitionError, available_challenges, load_challenge
from iugc.evaluator.ranking import cell as _fmt


def challenge_or_exit(name: str):
    """The challenge named (or the definition file given), or a usage error saying why not."""
    try:
        return load_challenge(name)
    except DefinitionError as exc:
        raise click.BadParameter(str(exc), param_hint="--challenge") from None


def output_file(ctx, param, value: Path | None) -> Path | None:
    """A result file to write: refused up front when it names a folder (nothing runs)."""
    if value is not None and value.is_dir():
        raise click.BadParameter(f"{value} is a folder; give the path of the JSON file to write, e.g. {value / 'result.json'}")
    return value


def selection_options(f):
    """--split and --cases: score a subset of the dataset."""
    f = click.option("--cases", "cases_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                     help="Score only the case ids listed in this text file (one per line, # comments).")(f)
    f = click.option("--split", default=None,
                     help="Score only the cases of this split of the dataset's manifest (train, validation, test; see `iugc data split`).")(f)
    return f


def read_case_ids(cases_file: Path | None):
    from iugc.evaluator.evaluate import EvaluationInputError, read_case_list

    if cases_file is None:
        return None
    try:
        return read_case_list(cases_file)
    except EvaluationInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--cases") from None


def selected(split: str | None, cases_file: Path | None) -> str:
    """' selected by --split validation', '' when all cases were scored."""
    how = [f"--split {split}"] * (split is not None) + [f"--cases {cases_file}"] * (cases_file is not None)
    return f" selected by {' and '.join(how)}" if how else ""


def score_line(result: dict) -> str:
    """The score, and why it is undefined when it is."""
    score = result.get("score")
    return f"  {'score':<10}{_fmt(score)}" + (f"  ({result.get('score_note')})" if score is None else "")


@click.command("evaluate")
@click.option("--predictions", required=True, type=click.Path(path_type=Path), help="Folder of <case_id>.png|.mha|.nii.gz masks (+ optional predictions.json).")
@click.option("--ground-truth", required=True, type=click.Path(path_type=Path), help="Dataset from `iugc data import` or a folder of truth masks.")
@click.option("--challenge", "challenge_name", required=True, help=f"Challenge name ({', '.join(available_challenges())}) or a definition .yaml.")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=output_file, help="Result JSON to write (atomically).")
@selection_options
@click.option("--jobs", type=count(1024), default=None, help="Worker processes (default: all usable cores).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Truth-biometry cache (default: $IUGC_CACHE_DIR or ~/.cache/iugc).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the truth-biometry cache.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def evaluate_cmd(predictions, ground_truth, challenge_name, out, split, cases_file, jobs, cache_dir, no_cache, quiet):
    """Score predicted masks against ground truth with the challenge's official metrics.

    Per case: Dice, Hausdorff distance and average surface distance for PS, FH and their
    union, AoP (and HSD for iugc2024) of prediction and truth and their errors. A missing
    or invalid prediction scores the worst case and is reported on stderr; the run never
    stops for one bad case, but an empty predictions folder is refused (a wrong path). --split / --cases score a subset. The result's "provenance"
    names the platform version, the challenge and truth hashes and the time. Exit status
    0 means the evaluation ran; 130 when interrupted (nothing is written).
    """
    from iugc.common.files import atomic_write_text
    from iugc.data_manifest.manifest import ManifestError
    from iugc.evaluator.evaluate import EvaluationInputError, default_cache_dir, evaluate_folder

    challenge = challenge_or_exit(challenge_name)
    case_ids = read_case_ids(cases_file)
    cache = None if no_cache else (cache_dir or default_cache_dir())
    if predictions.is_dir() and not any(p for p in predictions.iterdir() if not p.name.startswith(".")):
        # every case would score the worst case: almost always a wrong path, so nothing is written
        raise click.ClickException(f"{predictions} is empty: no mask and no predictions.json to score; give the folder your "
                                   "predictions were written to (an image's empty output is scored by `iugc evaluate-image`)")
    try:
        result = evaluate_folder(predictions, ground_truth, challenge, jobs=jobs, cache_dir=cache, progress=not quiet,
                                 split=split, case_ids=case_ids)
    except (EvaluationInputError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from None
    unreadable = [(c, case["error"]) for c, case in result["cases"].items() if (case["error"] or "").startswith("ground truth unreadable")]
    if unreadable:  # scores against missing truth would not be the challenge's: nothing is written
        first, reason = unreadable[0]
        raise click.ClickException(f"{len(unreadable)} of {len(result['cases'])} ground-truth masks could not be read, such as "
                                   f"case {first}'s ({reason.split(': ', 1)[1]}); check the ground-truth folder "
                                   "(`iugc data verify` for a dataset)")
    atomic_write_text(out, json.dumps(result, indent=1, allow_nan=False) + "\n")
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    for case_id, case in result["cases"].items():
        if case["error"]:
            click.echo(f"case {case_id}: {case['error']}", err=True)
    if not quiet:
        agg = result["aggregates"]
        click.echo(f"{challenge.name}: {agg['n_cases']} cases{selected(split, cases_file)}, {agg['n_errors']} with errors -> {out}")
        for key in ("dice", "hd", "asd", "re_ps1", "re_ps2", "re_fh1", "mre", "aop_error", "hsd_error", "accuracy", "auc", "f1", "mcc"):
            if key in agg:
                click.echo(f"  {key:<10}{_fmt(agg[key])}")
        click.echo(score_line(result))


@click.command("biometry")
@click.option("--method", type=click.Choice(["contour", "ellipse"]), required=True, help="contour: IUGC 2024; ellipse: PSFHS 2023.")
@click.argument("masks", nargs=-1, required=True, type=click.Path(path_type=Path))
def biometry_cmd(method, masks):
    """Print AoP/HSD of label masks, one JSON object per line.

    Keys: case, aop (degrees), hsd (pixels), ps_endpoints, hsd_point, tangent_point;
    points are [x, y] pixels; null where undefined. An unreadable mask prints an
    object with an "error" and the others go on (exit status 1 at the end).
    """
    from iugc.challenge.biometry import biometry
    from iugc.data_manifest.io import ReadError, case_id_of, read_mask

    failed = 0
    for path in masks:
        case = case_id_of(path) or path.name
        try:
            record = {"case": case, **biometry(read_mask(path), method).to_dict()}
        except ReadError as exc:
            failed += 1
            record = {"case": case, "error": str(exc)}  # the reason, said once: on its line
        click.echo(json.dumps(record))
    if failed:
        click.echo(f"error: {failed} of {len(masks)} masks could not be measured; their lines above say why", err=True)
    sys.exit(1 if failed else 0)


def _refuse_non_finite(name: str):
    raise ValueError(f"{name} is not a number a result can hold; `iugc evaluate` writes undefined values as null")


def _load_results(paths: list[Path]) -> tuple[dict[str, dict], dict[str, str], dict[str, Path], str]:
    """``(results, failed, sources, challenge)``: scored results by team, failed
    evaluate-image results by team (their reason), each team's file, the challenge."""
    results, failed, sources, names = {}, {}, {}, set()
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_non_finite)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{path}: not a readable results file ({exc})") from None
        if not isinstance(data, dict):
            raise click.ClickException(f"{path}: not an `iugc evaluate` or `iugc evaluate-image` result (not a JSON object)")
        team = data.get("team") or path.stem
        if team in sources:
            raise click.ClickException(f"{path}: team name {team!r} appears twice ({sources[team]}); rename the file")
        sources[team] = path
        name = data.get("challenge") or (data.get("provenance") or {}).get("challenge")
        if data.get("status") == "failed":
            failed[team] = f"{data.get('failure') or 'failed'}: {data.get('error') or 'no reason recorded'}"
            if name:
                names.add(name)
            continue
        if "cases" not in data or "aggregates" not in data:
            raise click.ClickException(f"{path}: not an `iugc evaluate` or `iugc evaluate-image` result (no cases/aggregates)")
        results[team] = data
        names.add(name)
    if len(names) != 1:
        raise click.ClickException(f"results come from different challenges: {sorted(map(str, names))}")
    if not results:
        raise click.ClickException(f"no result to rank: every evaluation failed ({', '.join(failed)})")
    return results, failed, sources, names.pop()


def _default_method(results: dict[str, dict], challenge) -> str:
    """The ranking method of the results' phase when they all name the same one, else score."""
    phases = {r.get("phase") for r in results.values()}
    if len(phases) == 1 and (phase := phases.pop()) in {p.name for p in challenge.phases}:
        return challenge.phase(phase).ranking_method
    return "score"


@click.command("rank")
@click.argument("results_files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--method", type=click.Choice(["score", "mean-rank", "test-then-rank"]), default=None,
              help="score: aggregate-then-rank; mean-rank: rank-then-aggregate; test-then-rank: the PSFHS 2023 final "
                   "ranking (one-sided Wilcoxon per metric, mean of the significance ranks). Default: the method of the "
                   "results' phase in the definition, else score.")
@click.option("--allow-missing", is_flag=True, help="Rank results covering different cases, each missing case scored as the worst case (said in the output).")
@click.option("--bootstrap", "samples", type=count(1_000_000, least=0), default=0, help="Add rank stability over N bootstrap resamples of the cases (e.g. 1000).")
@click.option("--wilcoxon", is_flag=True, help="Add pairwise Wilcoxon signed-rank significance ranks.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json-out", type=click.Path(path_type=Path), help="Also write the table (and stability) as JSON.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the robustness report to this new folder: blob plot of bootstrap ranks, a significance map and a "
                   "podium plot per ranking metric (PNG and SVG), Kendall's tau between the methods, report.json. "
                   "Uses --bootstrap N resamples (default: the definition's bootstrap_samples).")
def rank_cmd(results_files, method, allow_missing, samples, wilcoxon, seed, json_out, report_dir):
    """Rank teams from `iugc evaluate` / `iugc evaluate-image` results (team = the file's
    stem or its "team" key).

    The results must cover the same cases of the same truth (else the files and how
    their cases differ are named; --allow-missing ranks them anyway). A failed
    evaluate-image result ranks last, shown with its reason.
    """
    from iugc.common.files import atomic_write_text
    from iugc.evaluator.ranking import (
        bootstrap_ranks,
        case_set_problem,
        fill_missing_cases,
        format_table,
        rank_teams,
        wilcoxon_significance,
        with_failed_teams,
    )
    from iugc.evaluator.report import ReportError, write_report

    results, failed, sources, name = _load_results(list(results_files))
    challenge = challenge_or_exit(name)
    method = method or _default_method(results, challenge)
    problem = case_set_problem(
        {str(sources[t]): set(r["cases"]) for t, r in results.items()},
        {str(sources[t]): (r.get("provenance") or {}).get("truth_manifest_sha256") for t, r in results.items()},
    )
    notes = []
    if problem and (not allow_missing or "different truth" in problem):
        hint = "" if "different truth" in problem else "; rank results of one dataset, or pass --allow-missing to score missing cases as the worst case"
        raise click.ClickException(problem + hint)
    if problem:
        results, missing = fill_missing_cases(results, challenge)
        notes += [f"--allow-missing: {t} lacks {n} cases, scored as the worst case" for t, n in missing.items()]
    try:
        rows = rank_teams(results, challenge, method)
    except ValueError as exc:
        raise click.ClickException(f"--method {method}: {exc}") from None
    # test-then-rank resampled would be N x teams^2 x metrics tests: its bootstrap ranks by score
    boot_method = "score" if method == "test-then-rank" else method
    stability = bootstrap_ranks(results, challenge, boot_method, samples, seed, progress=True) if samples else None
    significance = wilcoxon_significance(results, challenge) if wilcoxon else None
    rows = with_failed_teams(rows, failed)
    notes += [f"{t}: evaluation failed ({reason}), ranked last" for t, reason in failed.items()]
    click.echo(format_table(rows, challenge, method, stability, significance))
    for note in notes:
        click.echo(note)
    if json_out:
        doc = {"challenge": name, "method": method, "rows": rows, "bootstrap": stability, "wilcoxon": significance, "notes": notes}
        atomic_write_text(json_out, json.dumps(doc, indent=1) + "\n")
    if report_dir:
        try:
            written = write_report(report_dir, results, failed, notes, challenge, samples or challenge.ranking.bootstrap_samples,
                                   seed, method)
        except ReportError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"report: {len(written)} files in {report_dir} ({', '.join(written[:3])} ...)")
