"""The challenge overview ``/``: tasks, data, rules, phases with dates, limits and quotas
(from the challenge definitions as loaded), and how to build a submission (docs/submission.md)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Blueprint, render_template
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from iugc.submissions import challenges, teams
from iugc.submissions.models import Challenge
from iugc.submissions.uploads import quota
from iugc.leaderboard.web.security import page
from iugc.leaderboard.app import service

bp = Blueprint("challenge", __name__)
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "submission.md"


@lru_cache(maxsize=1)
def _guide_html(mtime: float) -> Markup:
    import markdown

    return Markup(markdown.markdown(GUIDE.read_text(), extensions=["fenced_code", "tables", "toc"], output_format="html"))


def guide_html() -> Markup | None:
    """docs/submission.md as HTML (our own file, so trusted), or None when not shipped."""
    return _guide_html(GUIDE.stat().st_mtime) if GUIDE.is_file() else None


def challenge_views(session, user) -> list[dict]:
    views = []
    for row in session.execute(select(Challenge).order_by(Challenge.id)).scalars():
        definition = challenges.definition_of(row)
        team = teams.team_of(session, user, row.id) if user is not None else None
        phases = []
        for phase in row.phases:
            active = [d for d in phase.datasets if d.active]  # the one new evaluations use (none before an organizer adds it)
            phases.append({"row": phase, "quota": quota(session, team.id, phase) if team else None,
                           "cases": active[-1].n_cases if active else None})
        views.append({"row": row, "definition": definition, "phases": phases, "team": team})
    return views


@page(bp, "/", "public")
def overview():
    user = current_user.user if current_user.is_authenticated else None
    with service().sessions() as session:
        challenges = challenge_views(session, user)
        return render_template("challenge/overview.html", challenges=challenges)


@page(bp, "/how-to-submit", "public")
def guide():
    return render_template("challenge/guide.html", guide=guide_html())
