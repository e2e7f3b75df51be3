"""``iugc evaluate``, ``iugc biometry`` and ``iugc rank``."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from challenge.definition import DefinitionError, available_challenges, load_challenge
from evaluator.ranking import cell as _fmt


def _challenge(name: str):
    try:
        return load_challenge(name)
    except DefinitionError as exc:
        raise click.BadParameter(str(exc), param_hint="--challenge") from None


def _output_file(ctx, param, value: Path | None) -> Path | None:
    """A result file to write: refused up front when it names a folder (nothing runs)."""
    if value is not None and value.is_dir():
        raise click.BadParameter(f"{value} is a folder; give the path of the JSON file to write, e.g. {value / 'result.json'}")
    return value


def _selection_options(f):
    f = click.option("--cases", "cases_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                     help="Score only the case ids listed in this text file (one per line, # comments).")(f)
    f = click.option("--split", default=None,
                     help="Score only the cases of this split of the dataset's manifest (train, validation, test; see `iugc data split`).")(f)
    return f


def _case_ids(cases_file: Path | None):
    from evaluator.evaluate import EvaluationInputError, read_case_list

    if cases_file is None:
        return None
    try:
        return read_case_list(cases_file)
    except EvaluationInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--cases") from None


def _selected(split: str | None, cases_file: Path | None) -> str:
    """' selected by --split validation', '' when all cases were scored."""
    how = [f"--split {split}"] * (split is not None) + [f"--cases {cases_file}"] * (cases_file is not None)
    return f" selected by {' and '.join(how)}" if how else ""


def _score_line(result: dict) -> str:
    """The score, and why it is undefined when it is."""
    score = result.get("score")
    return f"  {'score':<10}{_fmt(score)}" + (f"  ({result.get('score_note')})" if score is None else "")


@click.command("evaluate")
@click.option("--predictions", required=True, type=click.Path(path_type=Path), help="Folder of <case_id>.png|.mha|.nii.gz masks (+ optional predictions.json).")
@click.option("--ground-truth", required=True, type=click.Path(path_type=Path), help="Dataset from `iugc data import` or a folder of truth masks.")
@click.option("--challenge", "challenge_name", required=True, help=f"Challenge name ({', '.join(available_challenges())}) or a definition .yaml.")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_output_file, help="Result JSON to write (atomically).")
@_selection_options
@click.option("--jobs", type=int, default=None, help="Worker processes (default: all usable cores).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Truth-biometry cache (default: $IUGC_CACHE_DIR or ~/.cache/iugc).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the truth-biometry cache.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def evaluate_cmd(predictions, ground_truth, challenge_name, out, split, cases_file, jobs, cache_dir, no_cache, quiet):
    """Score predicted masks against ground truth with the challenge's official metrics.

    Per case: Dice, Hausdorff distance and average surface distance for PS, FH and their
    union, AoP (and HSD for iugc2024) of prediction and truth and their errors. A missing
    or invalid prediction scores the worst case and is reported on stderr; the run never
    stops for one bad case. --split / --cases score a subset. The result's "provenance"
    names the platform version, the challenge and truth hashes and the time. Exit status
    0 means the evaluation ran; 130 when interrupted (nothing is written).
    """
    from data_manifest.io import atomic_write_text
    from data_manifest.manifest import ManifestError
    from evaluator.evaluate import EvaluationInputError, default_cache_dir, evaluate_folder

    challenge = _challenge(challenge_name)
    case_ids = _case_ids(cases_file)
    cache = None if no_cache else (cache_dir or default_cache_dir())
    try:
        result = evaluate_folder(predictions, ground_truth, challenge, jobs=jobs, cache_dir=cache, progress=not quiet,
                                 split=split, case_ids=case_ids)
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
        click.echo(f"{challenge.name}: {agg['n_cases']} cases{_selected(split, cases_file)}, {agg['n_errors']} with errors -> {out}")
        for key in ("dice", "hd", "asd", "re_ps1", "re_ps2", "re_fh1", "mre", "aop_error", "hsd_error", "accuracy", "auc", "f1", "mcc"):
            if key in agg:
                click.echo(f"  {key:<10}{_fmt(agg[key])}")
        click.echo(_score_line(result))


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


def _load_results(paths: list[Path]) -> tuple[dict[str, dict], dict[str, str], dict[str, Path], str]:
    """``(results, failed, sources, challenge)``: scored results by team, failed
    evaluate-image results by team (their reason), each team's file, the challenge."""
    results, failed, sources, names = {}, {}, {}, set()
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
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
@click.option("--bootstrap", "samples", type=int, default=0, help="Add rank stability over N bootstrap resamples of the cases (e.g. 1000).")
@click.option("--wilcoxon", is_flag=True, help="Add pairwise Wilcoxon signed-rank significance ranks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
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
    from data_manifest.io import atomic_write_text
    from evaluator.ranking import (
        bootstrap_ranks,
        case_set_problem,
        fill_missing_cases,
        format_table,
        rank_teams,
        wilcoxon_significance,
        with_failed_teams,
    )
    from evaluator.report import ReportError, write_report

    results, failed, sources, name = _load_results(list(results_files))
    challenge = _challenge(name)
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


_SIZE_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_size_mb(text: str) -> float:
    """'512m', '4g', '100k', '2048' (MB) -> megabytes.

    >>> parse_size_mb("4g"), parse_size_mb("512M"), parse_size_mb("300")
    (4096.0, 512.0, 300.0)
    """
    raw = text.strip().lower().removesuffix("b")
    unit = raw[-1] if raw and raw[-1] in _SIZE_UNITS else "m"
    number = raw[:-1] if raw and raw[-1] in _SIZE_UNITS else raw
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size; use e.g. 512m, 4g or 100k") from None
    if value <= 0:
        raise click.BadParameter(f"{text!r}: a size must be positive")
    return value


def _limits(challenge, phase_name, timeout, memory, cpus, output_limit, gpus):
    from dataclasses import replace

    from evaluator.docker_engine import Limits

    phases = {p.name: p for p in challenge.phases}
    if phase_name not in phases:
        raise click.BadParameter(f"{challenge.name} has no phase {phase_name!r}; phases: {', '.join(phases)}", param_hint="--phase")
    limits = Limits.from_phase(phases[phase_name])
    changes = {"time_limit_seconds": timeout, "cpus": cpus, "gpu": gpus,
               "memory_mb": int(parse_size_mb(memory)) if memory else None,
               "output_limit_mb": parse_size_mb(output_limit) if output_limit else None}
    return replace(limits, **{k: v for k, v in changes.items() if v is not None}), phases[phase_name]


# The option that lowers each limit a host may lack (HostLimitError.limit -> advice).
_HOST_LIMIT_OPTIONS = {
    "cpus": lambda host: f"--cpus {host.cpus}",
    "memory_mb": lambda host: f"--memory {max(1, host.memory_mb // 1024)}g",
    "gpu": lambda host: "--no-gpus",
}


def _platform_error(exc, out: Path) -> click.ClickException:
    """A platform fault: one line saying it is not the submission's, nothing written."""
    return click.ClickException(f"platform error, not the submission's fault: {exc}; nothing was written to {out}; "
                                "fix the platform and run again")


@click.command("evaluate-image")
@click.option("--image", required=True, help="Image reference (iugc/baseline:latest) or a `docker save` archive (.tar), checked before loading.")
@click.option("--data", "dataset", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False), help="Dataset from `iugc data import` (truth stays on the host).")
@click.option("--challenge", "challenge_name", required=True, help=f"Challenge name ({', '.join(available_challenges())}) or a definition .yaml.")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_output_file, help="Result JSON to write (atomically).")
@_selection_options
@click.option("--phase", default="sanity-check", show_default=True, help="Phase whose limits apply; the options below override them.")
@click.option("--timeout", type=float, default=None, help="Wall-time limit in seconds.")
@click.option("--memory", default=None, help="Memory limit (swap equal), e.g. 4g.")
@click.option("--cpus", type=float, default=None, help="CPU limit, e.g. 2.")
@click.option("--output-limit", default=None, help="Size limit of /output, e.g. 50m.")
@click.option("--gpus/--no-gpus", default=None, help="Request a GPU (default: the phase's setting).")
@click.option("--runner", type=click.Choice(["docker", "local"]), default="docker", show_default=True, help="local: run the trusted baseline as a subprocess (no engine).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Truth-biometry cache (default: $IUGC_CACHE_DIR or ~/.cache/iugc).")
@click.option("--quiet", is_flag=True, help="No summary.")
def evaluate_image_cmd(image, dataset, challenge_name, out, split, cases_file, phase, timeout, memory, cpus, output_limit, gpus, runner,
                       cache_dir, quiet):
    """Run a submission image on a dataset in a hardened sandbox and score it.

    The image sees only the frames (/input, read-only) and writes masks and
    predictions.json to /output; no network, no root, limits from the phase. Exit status
    0 means the evaluation ran, whatever the submission did: read "status" and "error" in
    the result. Non-zero means the platform could not run it (no engine, a limit the host
    cannot give: a GPU, more CPUs or memory than it has, a full disk): the message says
    what and how to override it, and nothing is written. 130: interrupted.
    """
    from data_manifest.io import atomic_write_text
    from data_manifest.manifest import ManifestError
    from evaluator.evaluate import EvaluationInputError, default_cache_dir, discover_truth, truth_provenance
    from evaluator.evaluate_image import evaluate_image
    from evaluator.exceptions import CancelledError, HostLimitError, RetryableError, SubmissionError

    challenge = _challenge(challenge_name)
    case_ids = _case_ids(cases_file)
    limits, phase_def = _limits(challenge, phase, timeout, memory, cpus, output_limit, gpus)
    phase_label = f"phase {phase_def.name}"
    engine = None
    stack = contextlib.ExitStack()  # removes, at the end, an image this run loaded from an archive
    try:
        if runner == "docker":
            from evaluator import docker_engine

            engine = docker_engine.client()
            host = docker_engine.host_resources(engine)
            docker_engine.check_host(limits, host, phase_label)  # before an archive is loaded or anything runs
        if image.endswith(".tar") or Path(image).is_file():
            if runner != "docker":
                raise click.UsageError("an image archive needs --runner docker")
            from evaluator.intake import archive_loaded

            try:
                image = stack.enter_context(archive_loaded(engine, image, limits))
            except SubmissionError as exc:
                truth = discover_truth(dataset).select(split=split, case_ids=case_ids)
                result = {"image": image, "status": "failed", "failure": exc.reason, "error": str(exc), "logs": "",
                          "phase": phase_def.name, "provenance": truth_provenance(truth, challenge, split)}
                atomic_write_text(out, json.dumps(result, indent=1) + "\n")
                click.echo(f"failed: {exc}")
                return
        result = evaluate_image(image, dataset, challenge, limits, runner=runner, cache_dir=cache_dir or default_cache_dir(),
                                engine=engine, split=split, case_ids=case_ids, phase=phase_label)
    except HostLimitError as exc:
        option = _HOST_LIMIT_OPTIONS[exc.limit](host)
        raise click.ClickException(f"platform cannot run this: {exc}; nothing ran and nothing was written to {out}. "
                                   f"Run on a host that has it, or override the phase's limit with {option}") from None
    except RetryableError as exc:
        raise _platform_error(exc, out) from None
    except (ManifestError, EvaluationInputError) as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from None
    except (CancelledError, KeyboardInterrupt):
        click.echo("cancelled: the container and its folders were removed", err=True)
        sys.exit(130)
    finally:
        stack.close()
    result["phase"] = phase_def.name
    result["logs_visible_to_participants"] = phase_def.logs_visible_to_participants
    atomic_write_text(out, json.dumps(result, indent=1, allow_nan=False) + "\n")
    if quiet:
        return
    t = result.get("timings", {})
    n_cases = result["provenance"]["n_cases"]
    click.echo(f"{result['status']}: {image} on {dataset}, {n_cases} cases{_selected(split, cases_file)} "
               f"({challenge.name}, phase {phase_def.name}) -> {out}")
    if result.get("error"):
        click.echo(f"  error: {result['error']}")
    if result.get("runtime_seconds") is not None:
        click.echo(f"  model time {result['runtime_seconds']:.2f} s, platform overhead {t.get('overhead', 0):.2f} s")
    if result["status"] == "succeeded":
        agg = result["aggregates"]
        for key in ("dice", "hd", "asd", "mre", "aop_error", "hsd_error", "accuracy", "auc"):
            if key in agg:
                click.echo(f"  {key:<10}{_fmt(agg[key])}")
        click.echo(_score_line(result))


@click.group("docker")
def docker_group():
    """Build the base and baseline images offline, and check uploaded image archives."""


@docker_group.command("build-base")
@click.option("--mirror", default=None, help="Debian mirror (default http://deb.debian.org/debian).")
@click.option("--force", is_flag=True, help="Rebuild even if an image of the same recipe exists.")
def build_base_cmd(mirror, force):
    """Build iugc/base:latest (Debian bookworm, python3, NumPy, Pillow, pip) with
    debootstrap + docker import. Cached by the recipe's hash: a second call takes seconds.
    Needs root, debootstrap and a running engine."""
    from evaluator.exceptions import RetryableError
    from evaluator.images import BASE_IMAGE, DEFAULT_MIRROR, build_base

    try:
        image_id, built = build_base(mirror=mirror or DEFAULT_MIRROR, force=force)
    except RetryableError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{BASE_IMAGE} {image_id[:19]} ({'built' if built else 'up to date, recipe unchanged'})")


@docker_group.command("load")
@click.argument("archive", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--max-size", default="10g", show_default=True, help="Largest archive accepted.")
def load_cmd(archive, max_size):
    """Check a `docker save` archive (size, paths, links, devices, one image), load it and
    check the image (non-root USER, linux/amd64); print its id. Nothing stays loaded on failure."""
    from evaluator import docker_engine
    from evaluator.exceptions import RetryableError, SubmissionError
    from evaluator.intake import load_archive

    limits = docker_engine.Limits(image_size_limit_mb=parse_size_mb(max_size))
    try:
        click.echo(load_archive(docker_engine.client(), archive, limits)[0])
    except (SubmissionError, RetryableError) as exc:
        raise click.ClickException(str(exc)) from None
