"""Number types for command-line options. Every count, size, rate, port and seed a command
reads declares its range here or with ``click.IntRange``, so a value outside it gets Click's
one sentence naming the option (exit 2) before anything runs, instead of a traceback or a
half-made folder further in. Floats must also be finite: ``click.FloatRange`` lets ``nan``
through (no comparison with NaN is true) and ``inf`` through an open top."""
from __future__ import annotations

import math

import click

SEED = click.IntRange(0, 2**32 - 1)  # what numpy's generators accept
PORT = click.IntRange(1, 65535)
ROW_ID = click.IntRange(1, 2**63 - 1)  # a database row number: SQLite's and PostgreSQL's largest integer


class Number(click.FloatRange):
    """A finite float within the range (``min``/``max`` as ``click.FloatRange``)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def count(most: int, least: int = 1) -> click.IntRange:
    """A whole number of things from ``least`` (1 unless zero means something) to ``most``."""
    return click.IntRange(least, most)
