"""Leaderboards: ``/leaderboard`` (the phases) and ``/leaderboard/<slug>`` (ranked rows,
every metric column, sortable; ``?method=`` switches between the challenge's ranking
methods). The rows are ``submissions.reports.leaderboard``, which ranks with
``evaluator.ranking``. Who sees what: organizers every phase; participants every phase
but a final-test one before it is published; anonymous visitors the phases an organizer
has published (made public)."""
from __future__ import annotations

import threading
from collections import OrderedDict

from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup
from flask_login import current_user
from sqlalchemy import select

from submissions import admin, reports
from submissions.exceptions import Forbidden, NotFound
from submissions.models import LeaderboardEntry, Phase, Role, Team, User
from leaderboard.web import charts
from leaderboard.web.security import page

bp = Blueprint("leaderboard", __name__, url_prefix="/leaderboard")

# (key, label, higher is better); shown when the rows have the key
COLUMNS = [
    ("score", "Score", True), ("mean_rank", "Mean rank", False),
    ("dice_ps", "Dice PS", True), ("dice_fh", "Dice FH", True), ("dice_all", "Dice all", True),
    ("hd", "HD (px)", False), ("asd", "ASD (px)", False),
    ("aop_error", "ΔAoP (°)", False), ("hsd_error", "ΔHSD (px)", False),
    ("accuracy", "Accuracy", True), ("f1", "F1", True), ("auc", "AUC", True), ("mcc", "MCC", True),
    ("n_cases", "Cases", None),
]
ANONYMOUS = User(id=0, email="", role=Role.participant)
"""Stands for an anonymous visitor where ``reports`` asks for a viewer (never stored)."""


def viewer() -> User | None:
    return current_user.user if current_user.is_authenticated else None


def visible(phase: Phase, user: User | None) -> bool:
    if user is None:
        return phase.results_published
    return not reports.results_hidden(phase, user)


def fingerprint(session, phase: Phase) -> tuple:
    """What the ranked rows depend on: each team's name and ranked evaluation (a succeeded
    evaluation never changes; a team's entry moves to another evaluation when one succeeds)."""
    return tuple(session.execute(select(LeaderboardEntry.team_id, Team.name, LeaderboardEntry.evaluation_id)
                                 .join(Team, Team.id == LeaderboardEntry.team_id)
                                 .where(LeaderboardEntry.phase_id == phase.id).order_by(LeaderboardEntry.team_id)).all())


CACHED_BOARDS = 64


def _cached(key, compute):
    """``compute()``, kept per app (least recently used dropped past ``CACHED_BOARDS``)."""
    cache, lock = current_app.extensions.setdefault("iugc_boards", (OrderedDict(), threading.Lock()))
    with lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = compute()
    with lock:
        cache[key] = value
        while len(cache) > CACHED_BOARDS * 3:  # rows, view and tables of each board
            cache.popitem(last=False)
    return value


def board(session, user: User | None, slug: str, method: str | None) -> dict:
    """The leaderboard of ``slug`` for ``user`` (None: anonymous), or Forbidden.

    Who may see it is checked on every call; the ranked rows are kept (``CACHED_BOARDS``)
    by phase, method and :func:`fingerprint`, and recomputed when that changes."""
    phase = admin.phase_by_slug(session, slug)
    if user is None and not phase.results_published:
        raise Forbidden(f"the leaderboard of {slug} is not public yet; log in to see it")
    viewer_ = user or ANONYMOUS
    if reports.results_hidden(phase, viewer_):
        reports.leaderboard(session, viewer_, slug, method)  # raises its Forbidden
    key = ("rows", phase.id, method, fingerprint(session, phase))
    data = _cached(key, lambda: reports.leaderboard(session, viewer_, slug, method))
    return {**_cached(("view",) + key[1:], lambda: _view(data, phase)), "phase_row": phase, "key": key}


def _view(data: dict, phase: Phase) -> dict:
    columns = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in data["rows"]) or c[0] in ("score", "dice_all")]
    ranks = [r["rank"] for r in data["rows"]]
    digits = {key: 0 if key == "n_cases" else 4 if key == "score" else 3 for key, _, _ in columns}
    cells = [[(cell(r.get(key), digits[key]), "" if r.get(key) is None else r.get(key)) for key, _, _ in columns] for r in data["rows"]]
    return {**data, "columns": columns, "cells": cells, "tied": {r for r in ranks if ranks.count(r) > 1},
            "methods": admin.definition_of(phase.challenge).ranking.methods}


def cell(value, digits: int) -> str:
    """A table cell's text: the number with ``digits`` decimals, "—" when undefined.

    >>> cell(0.91234, 3), cell(None, 3), cell(20, 0)
    ('0.912', '—', '20')
    """
    return "—" if value is None else f"{value:.{digits}f}"


@page(bp, "", "public")
def index():
    user = viewer()
    with current_app.extensions["iugc"].sessions() as session:
        phases = session.execute(select(Phase).order_by(Phase.id)).scalars().all()
        return render_template("leaderboard/index.html", phases=[(p, visible(p, user)) for p in phases])


@page(bp, "/<slug>", "public")
def phase(slug):
    with current_app.extensions["iugc"].sessions() as session:
        user = viewer()
        data = board(session, user, slug, request.args.get("method") or None)
        team = admin.team_of(session, user, data["phase_row"].challenge_id) if user is not None else None
        stats = charts.analysis(session, data["phase_row"], data["method"], _cache())
        my_team = team.name if team else None
        organizer = user is not None and user.role == Role.organizer
        table = _cached(("table", *data["key"][1:], my_team, organizer),
                        lambda: Markup(render_template("leaderboard/_table.html", b=data, my_team=my_team, organizer=organizer)))
        return render_template("leaderboard/phase.html", b=data, table=table, stats=stats, order=[r["team"] for r in data["rows"]])


def _cache():
    return current_app.extensions["iugc"].settings.instance / "cache" / "ranking"


@page(bp, "/<slug>/stability.svg", "public")
def stability(slug):
    """The bootstrap rank-stability chart (same visibility as the leaderboard)."""
    with current_app.extensions["iugc"].sessions() as session:
        data = board(session, viewer(), slug, request.args.get("method") or None)
        stats = charts.analysis(session, data["phase_row"], data["method"], _cache())
        if stats is None:
            raise NotFound(f"{slug} has no rank-stability analysis: it needs two ranked teams with per-case values")
        svg = charts.stability_svg(stats, [r["team"] for r in data["rows"]], _cache())
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})
