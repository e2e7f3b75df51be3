"""docs/input-boundaries.md names every place outside input enters: each command, each
API v1 endpoint and each IUGC_* environment variable the packages read."""
import re

import click

from tests.conftest import ROOT

DOC = (ROOT / "docs" / "input-boundaries.md").read_text()
PACKAGES = ("common", "challenge", "data_manifest", "evaluator", "sandbox", "baseline", "submissions", "leaderboard", "iugc")


def commands(group: click.Group, path: str = "iugc"):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}"


def test_every_command_is_in_the_inventory():
    from iugc.cli import main

    found = sorted(commands(main))
    assert len(found) > 30
    missing = [c for c in found if f"| `{c}` |" not in DOC]
    assert not missing, f"commands missing from docs/input-boundaries.md: {missing}"


def test_every_api_endpoint_is_in_the_inventory():
    declared = re.findall(r'^@endpoint\("([^"]+)", "(GET|POST|PUT|PATCH|DELETE)"', (ROOT / "leaderboard" / "api.py").read_text(), re.M)
    rules = {(method, "/api/v1" + re.sub(r"<(?:int:)?(\w+)>", r"<\1>", rule)) for rule, method in declared}
    assert len(rules) >= 10
    missing = sorted(f"{method} {rule}" for method, rule in rules if f"`{method} {rule}`" not in DOC)
    assert not missing, f"API v1 endpoints missing from docs/input-boundaries.md: {missing}"


def test_every_environment_variable_read_is_in_the_inventory():
    read = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            read |= set(re.findall(r"\bIUGC_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert {"IUGC_DATABASE_URL", "IUGC_SECRET_KEY", "IUGC_TOKEN"} <= read
    missing = sorted(v for v in read if f"`{v}`" not in DOC)
    assert not missing, f"environment variables missing from docs/input-boundaries.md: {missing}"
