"""``iugc kit new|check`` and ``iugc docker export-base``: what a team needs before uploading."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from challenge.definition import available_challenges


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
    from evaluator.exceptions import KitError
    from evaluator.kit import DEFAULT_BASE, new_kit

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
    from data_manifest.io import atomic_write_text
    from evaluator.exceptions import CancelledError, KitError, RetryableError
    from evaluator.kit import check, format_report

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


@click.command("export-base")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Archive to write, e.g. iugc-base.tar (+ .sha256 beside it).")
def export_base_cmd(out):
    """Save iugc/base:latest with `docker save` and its sha256, for teams without
    registry access: they check it (`sha256sum -c FILE.sha256`) and `docker load -i FILE`."""
    from evaluator.exceptions import RetryableError
    from evaluator.images import BASE_IMAGE, export_base

    try:
        digest = export_base(out)
    except RetryableError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{BASE_IMAGE} -> {out} ({out.stat().st_size / 2**20:.0f} MB), sha256 {digest} in {out.name}.sha256")
    click.echo(f"teams: sha256sum -c {out.name}.sha256 && docker load -i {out.name}")
