"""Every number a command reads has a range: a count, size, rate, port or seed outside it,
or a float that is not finite, is refused by Click with its one sentence before anything
runs (no traceback from deep inside, no half-made folder, no integer past the database's)."""
from __future__ import annotations

import click
import pytest

from iugc.common.options import Number
from iugc.cli import main

# Checked by the service itself, with the sentence the web form shows too.
CHECKED_BY_THE_SERVICE = {("iugc admin phase", "--per-day")}


def _commands(group: click.Group, path: str = "iugc"):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


NUMBER_OPTIONS = [(name, param) for name, command in _commands(main) for param in command.params
                  if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))
                  and (name, param.opts[0]) not in CHECKED_BY_THE_SERVICE]


def test_every_number_option_declares_its_range():
    assert len(NUMBER_OPTIONS) > 40
    unbounded = [f"{name} {p.opts[0]}" for name, p in NUMBER_OPTIONS
                 if not (isinstance(p.type, click.IntRange) and p.type.min is not None and p.type.max is not None
                         or isinstance(p.type, Number) and p.type.min is not None)]
    assert not unbounded, f"give these a range (click.IntRange with both ends, or iugc.common.options.Number): {unbounded}"


@pytest.mark.parametrize("name, param", [pytest.param(n, p, id=f"{n} {p.opts[0]}") for n, p in NUMBER_OPTIONS])
def test_a_number_option_refuses_what_is_not_in_its_range(name, param):
    kind = param.type
    bad = ["abc", "", "1e999" if isinstance(kind, Number) else "99999999999999999999999"]
    if isinstance(kind, Number):
        bad += ["nan", "inf", "-inf", str(kind.min - 1)]
    else:
        bad += [str(kind.min - 1), str(kind.max + 1)]
    ctx = click.Context(click.Command(name))
    for value in bad:
        with pytest.raises(click.BadParameter):
            kind.convert(value, param, ctx)
    assert kind.convert(str(param.default if param.default is not None else kind.min + (0 if isinstance(kind, click.IntRange) else 1)),
                        param, ctx) is not None  # the default (or the bottom of the range) is taken
