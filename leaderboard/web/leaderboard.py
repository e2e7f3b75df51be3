"""Leaderboards: ``/leaderboard`` (the phases) and ``/leaderboard/<slug>`` (ranked rows,
every metric column, sortable; ``?method=`` switches between the challenge's ranking
methods). The rows are ``iugc.submissions.reports.leaderboard``, which ranks with
``iugc.evaluator.ranking``. Who sees what: organizers every phase; participants every phase
but a final-test one before it is published; anonymous visitors the phases an organizer
has published (made public)."""
from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from flask import session as flask_session
from markupsafe import Markup
from flask_login import current_user
from sqlalchemy import select

from iugc.submissions import challenges, reports, teams
from iugc.submissions.exceptions import NotFound
from iugc.submissions.models import Phase, Role, User
from iugc.leaderboard import boards
from iugc.leaderboard.web import charts
from iugc.leaderboard.web.security import page
from iugc.leaderboard.app import service

bp = Blueprint("leaderboard", __name__, url_prefix="/leaderboard")

# (key, label, higher is better); shown when the rows have the key
COLUMNS = [
    ("score", "Score", True), ("mean_rank", "Mean rank", False),
    ("dice_ps", "Dice PS", True), ("dice_fh", "Dice FH", True), ("dice_all", "Dice all", True),
    ("hd", "HD (px)", False), ("asd", "ASD (px)", False),
    ("re_ps1", "RE PS1 (px)", False), ("re_ps2", "RE PS2 (px)", False), ("re_fh1", "RE FH1 (px)", False),
    ("mre", "MRE (px)", False),
    ("aop_error", "ΔAoP (°)", False), ("hsd_error", "ΔHSD (px)", False),
    ("accuracy", "Accuracy", True), ("f1", "F1", True), ("auc", "AUC", True), ("mcc", "MCC", True),
    ("n_cases", "Cases", None),
]
# the metric a result key belongs to, by its prefix (per structure, per point, predicted and expert values);
# a longer prefix before the shorter one it starts with
_FAMILIES = (("dice", "dice"), ("hd95", "hd95"), ("hd", "hd"), ("asd", "asd"), ("nsd", "nsd"), ("sensitivity", "sensitivity"),
             ("precision", "precision"), ("re_", "mre"), ("mre", "mre"), ("aop", "aop_error"),
             ("hsd", "hsd_error"), ("accuracy", "accuracy"), ("f1", "f1"), ("auc", "auc"), ("mcc", "mcc"))


def defined_by(key: str, definition) -> bool:
    """Whether a result key (``dice_ps``, ``hsd_pred``, ``p_standard_plane``, ``n_cases``, ...)
    belongs to what the challenge measures: a page shows no column the challenge does not define.

    >>> from iugc.challenge.definition import load_challenge
    >>> psfhs = load_challenge("psfhs2023")
    >>> [k for k in ("dice_fh", "hsd_error", "hsd_pred", "aop_gt", "hd95_ps", "p_standard_plane", "n_cases") if defined_by(k, psfhs)]
    ['dice_fh', 'aop_gt', 'n_cases']
    """
    if key == "p_standard_plane":
        return "classification" in definition.tasks
    for prefix, metric in _FAMILIES:
        if key.startswith(prefix):
            return metric in definition.metrics
    return True  # scores, ranks and counts


def viewer() -> User | None:
    return current_user.user if current_user.is_authenticated else None


def visible(phase: Phase, user: User | None) -> bool:
    """Whether ``user`` (None: an anonymous visitor) sees the board: everyone sees every
    board but a final test's, which only organizers see until it is published."""
    return not reports.results_hidden(phase, user or boards.ANONYMOUS)


def board(session, user: User | None, slug: str, method: str | None) -> dict:
    """The leaderboard of ``slug`` for ``user`` (None: anonymous), or Forbidden.

    Who may see it is checked on every call; the ranked rows and their view are kept by
    ``iugc.leaderboard.boards`` (shared with the API) and recomputed when its key changes.
    ``phase_row()`` loads the phase itself (only what is not kept needs it)."""
    state = boards.state(session, slug, method)
    data = boards.ranked(session, user or boards.ANONYMOUS, state)  # Forbidden for a final test not published yet

    def phase_row() -> Phase:
        return session.get(Phase, state.id)  # once per session (the identity map keeps it)
    return {**boards.kept(("view",) + state.key, lambda: _view(data, phase_row())), "phase_row": phase_row, "key": state.key}


def how_it_ranks(method: str, definition) -> str:
    """One sentence a participant reads above a board: how this tab orders the teams.

    >>> from iugc.challenge.definition import load_challenge
    >>> how_it_ranks("mean-rank", load_challenge("psfhs2023"))
    'Each team is ranked on each of dice, hd, asd, aop_error (ties share the better rank); the order is the mean of those ranks, lowest first.'
    """
    metrics = ", ".join(definition.ranking.mean_rank_metrics)
    return {
        "score": "Each team's mean metrics are combined into one score (the formula is on the overview); highest first.",
        "mean-rank": f"Each team is ranked on each of {metrics} (ties share the better rank); the order is the mean of those ranks, lowest first.",
        "test-then-rank": (f"On each of {metrics}, a team's rank is 1 + the number of teams significantly better on the same cases "
                           f"(one-sided Wilcoxon signed-rank test, alpha {definition.ranking.alpha}); the order is the mean of those "
                           "ranks. With few cases few differences are significant, so many teams can share a place."),
    }.get(method, "")


def _view(data: dict, phase: Phase) -> dict:
    definition = challenges.definition_of(phase.challenge)
    headline = "mre" if "landmarks" in definition.tasks else "dice_all"  # shown on an empty board too
    columns = [c for c in COLUMNS if defined_by(c[0], definition)
               and (any(r.get(c[0]) is not None for r in data["rows"]) or c[0] in ("score", headline))]
    ranks = [r["rank"] for r in data["rows"]]
    digits = {key: 0 if key == "n_cases" else 4 if key == "score" else 3 for key, _, _ in columns}
    cells = [[(cell(r.get(key), digits[key]), "" if r.get(key) is None else r.get(key)) for key, _, _ in columns] for r in data["rows"]]
    return {**data, "columns": columns, "cells": cells, "tied": {r for r in ranks if ranks.count(r) > 1},
            "methods": definition.ranking.methods, "how": how_it_ranks(data["method"], definition)}


def cell(value, digits: int) -> str:
    """A table cell's text: the number with ``digits`` decimals, "—" when undefined.

    >>> cell(0.91234, 3), cell(None, 3), cell(20, 0)
    ('0.912', '—', '20')
    """
    return "—" if value is None else f"{value:.{digits}f}"


@page(bp, "", "public")
def index():
    user = viewer()
    with service().sessions() as session:
        phases = session.execute(select(Phase).order_by(Phase.id)).scalars().all()
        return render_template("leaderboard/index.html", phases=[(p, visible(p, user)) for p in phases])


@page(bp, "/<slug>", "public")
def phase(slug):
    with service().read_sessions() as session:
        user = viewer()
        data = board(session, user, slug, request.args.get("method") or None)
        if user is None and "_flashes" not in flask_session:  # an anonymous page is the same for everyone: kept whole
            return boards.kept(("page", *data["key"]), lambda: _page(session, None, data))
        return _page(session, user, data)


def _page(session, user: User | None, data: dict) -> str:
    phase_row = data["phase_row"]()
    team = teams.team_of(session, user, phase_row.challenge_id) if user is not None else None
    my_team = team.name if team else None
    organizer = user is not None and user.role == Role.organizer
    b = {**data, "phase_row": phase_row}
    table = boards.kept(("table", *data["key"], my_team, organizer),
                        lambda: Markup(render_template("leaderboard/_table.html", b=b, my_team=my_team, organizer=organizer)))
    return render_template("leaderboard/phase.html", b=b, table=table, stats=_analysis(session, data),
                           order=[r["team"] for r in data["rows"]])


def _cache():
    return service().settings.instance / "cache" / "ranking"


def _analysis(session, data: dict) -> dict | None:
    """``charts.analysis`` of the board, kept in memory under the board's key (it is kept on
    disk too, but reading and parsing it on every view costs more than the rest)."""
    return boards.kept(("stats", *data["key"]), lambda: charts.analysis(session, data["phase_row"](), data["method"], _cache()))


@page(bp, "/<slug>/stability.svg", "public")
def stability(slug):
    """The bootstrap rank-stability chart (same visibility as the leaderboard)."""
    with service().read_sessions() as session:
        data = board(session, viewer(), slug, request.args.get("method") or None)
        stats = _analysis(session, data)
        if stats is None or stats["bootstrap"] is None:
            raise NotFound(f"{slug} has no rank-stability analysis by this method: it needs two ranked teams with per-case values, "
                           "ranked by score or mean-rank")
        svg = charts.stability_svg(stats, [r["team"] for r in data["rows"]], _cache())
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})
