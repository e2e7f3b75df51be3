"""``iugc challenge``: list and show the challenge definitions."""
from __future__ import annotations

import json

import click

from iugc.challenge.definition import DefinitionError, available_challenges, load_challenge


@click.group("challenge")
def challenge_group() -> None:
    """List and show challenge definitions (data files under challenge/definitions/)."""


@challenge_group.command("list")
def list_cmd() -> None:
    """List the shipped challenges with their AoP method and phases."""
    for name in available_challenges():
        c = load_challenge(name)
        phases = ", ".join(p.name for p in c.phases)
        click.echo(f"{name:<12} {c.aop_method:<9} tasks: {', '.join(c.tasks)}; phases: {phases}")


@challenge_group.command("show")
@click.argument("name_or_path")
def show_cmd(name_or_path: str) -> None:
    """Validate a definition (shipped name or YAML path) and print it as JSON."""
    try:
        c = load_challenge(name_or_path)
    except DefinitionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(c.model_dump(mode="json"), indent=2))
