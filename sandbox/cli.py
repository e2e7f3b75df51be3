"""Every sandbox command: ``iugc evaluate-image``, ``iugc docker ...`` (build the base and
baseline images, load and check an archive, export the base) and ``iugc kit new|check``."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from iugc.common.options import Number
from iugc.challenge.definition import available_challenges
from iugc.evaluator.cli import read_case_ids, challenge_or_exit, output_file, score_line, selected, selection_options
from iugc.evaluator.ranking import cell as _fmt


@click.group("kit")
def kit_group():
    """Start a submission from a template and check it as the platform would, offline."""


@kit_group.command("new")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--challenge", required=True, help=f"Challenge name ({', '.join(available_challenges())}) or a definition .yaml (copied into the kit).")
@click.option("--base", default=None, help="Base image. Default python:3.11-slim (needs a registry and PyPI); iugc/base:latest builds with no network (`iugc docker build-base`, or `docker load` the organizers' archive).")
def kit_new_cmd(dest, challenge, base):
    """Write a submission project into DEST (new or empty): Dockerfile (non-root,
    the contract's entry point), predict.py with one marked function for your model and
    a valid stand-in, requirements.txt, wheels/, README.md and kit.json.

    Nothing is written when DEST is not empty or the challenge is unknown.
    """
    from iugc.sandbox.exceptions import KitError
    from iugc.sandbox.kit import DEFAULT_BASE, new_kit

    try:
        kit = new_kit(dest, challenge, base=base or DEFAULT_BASE)
    except KitError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote the {challenge} submission kit to {dest} (image {kit.image}, base {base or DEFAULT_BASE})")
    click.echo(f"next: put your model into predict() in {dest / 'predict.py'}, then `iugc kit check {dest}`")


@kit_group.command("check")
@click.argument("target")
@click.option("--challenge", default=None, help="Challenge name or .yaml (default: the kit's; required for an image or archive).")
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None, help="Public sample cases (`iugc data sample`); default: SYNTHETIC phantoms.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the platform's result JSON here (atomically).")
def kit_check_cmd(target, challenge, data, out):
    """Build TARGET (a kit folder), load it (a `docker save` archive, through the
    platform's intake checks) or take it as an image reference, and run it exactly as the
    challenge's sanity-check phase does: the platform's sandbox and limits, output checks
    and scoring.

    Prints accepted or refused with the platform's reason, each case's problem, the time
    and memory against the phase's limits, and the scores. Exit status 0 only when the
    platform would accept it; 1 when refused or it cannot be checked.
    """
    from iugc.common.files import atomic_write_text
    from iugc.sandbox.exceptions import CancelledError, KitError, RetryableError
    from iugc.sandbox.kit import check, format_report

    try:
        report = check(target, challenge=challenge, data=data)
    except (KitError, RetryableError) as exc:
        raise click.ClickException(str(exc)) from None
    except (CancelledError, KeyboardInterrupt):
        click.echo("cancelled: the container and its folders were removed", err=True)
        sys.exit(130)
    if out is not None:
        atomic_write_text(out, json.dumps(report.result, indent=1, allow_nan=False) + "\n")
    for line in format_report(report):
        click.echo(line)
    sys.exit(0 if report.accepted else 1)


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

    from iugc.sandbox.docker_engine import Limits

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
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=output_file, help="Result JSON to write (atomically).")
@selection_options
@click.option("--phase", default="sanity-check", show_default=True, help="Phase whose limits apply; the options below override them.")
@click.option("--timeout", type=Number(min=0, min_open=True), default=None, help="Wall-time limit in seconds.")
@click.option("--memory", default=None, help="Memory limit (swap equal), e.g. 4g.")
@click.option("--cpus", type=Number(min=0, max=1024, min_open=True), default=None, help="CPU limit, e.g. 2.")
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
    from iugc.common.files import atomic_write_text
    from iugc.data_manifest.manifest import ManifestError
    from iugc.evaluator.evaluate import EvaluationInputError, default_cache_dir, discover_truth, truth_provenance
    from iugc.sandbox.container_runner import refuse_untrusted
    from iugc.sandbox.evaluate_image import evaluate_image
    from iugc.sandbox.exceptions import CancelledError, HostLimitError, RetryableError, SubmissionError

    if runner == "local":
        try:
            refuse_untrusted(image)  # before anything is read or written
        except SubmissionError as exc:
            raise click.BadParameter(str(exc), param_hint="--image") from None
    challenge = challenge_or_exit(challenge_name)
    case_ids = read_case_ids(cases_file)
    limits, phase_def = _limits(challenge, phase, timeout, memory, cpus, output_limit, gpus)
    phase_label = f"phase {phase_def.name}"
    engine = None
    stack = contextlib.ExitStack()  # removes, at the end, an image this run loaded from an archive
    try:
        if runner == "docker":
            from iugc.sandbox import docker_engine

            engine = docker_engine.client()
            host = docker_engine.host_resources(engine)
            docker_engine.check_host(limits, host, phase_label)  # before an archive is loaded or anything runs
        if image.endswith(".tar") or Path(image).is_file():
            if runner != "docker":
                raise click.UsageError("an image archive needs --runner docker")
            from iugc.sandbox.intake import archive_loaded

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
    click.echo(f"{result['status']}: {image} on {dataset}, {n_cases} cases{selected(split, cases_file)} "
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
        click.echo(score_line(result))


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
    from iugc.sandbox.exceptions import RetryableError
    from iugc.sandbox.images import BASE_IMAGE, DEFAULT_MIRROR, build_base

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
    from iugc.sandbox import docker_engine
    from iugc.sandbox.exceptions import RetryableError, SubmissionError
    from iugc.sandbox.intake import load_archive

    limits = docker_engine.Limits(image_size_limit_mb=parse_size_mb(max_size))
    try:
        click.echo(load_archive(docker_engine.client(), archive, limits)[0])
    except (SubmissionError, RetryableError) as exc:
        raise click.ClickException(f"{archive}: {exc}") from None


@docker_group.command("export-base")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Archive to write, e.g. iugc-base.tar (+ .sha256 beside it).")
def export_base_cmd(out):
    """Save iugc/base:latest with `docker save` and its sha256, for teams without
    registry access: they check it (`sha256sum -c FILE.sha256`) and `docker load -i FILE`."""
    from iugc.sandbox.exceptions import RetryableError
    from iugc.sandbox.images import BASE_IMAGE, export_base

    try:
        digest = export_base(out)
    except RetryableError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{BASE_IMAGE} -> {out} ({out.stat().st_size / 2**20:.0f} MB), sha256 {digest} in {out.name}.sha256")
    click.echo(f"teams: sha256sum -c {out.name}.sha256 && docker load -i {out.name}")
