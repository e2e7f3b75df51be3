"""The challenge overview ``/``: tasks, data, rules, a timeline and phases with dates,
limits and quotas (from the challenge definitions as loaded); each challenge's data page
and terms (which a team member accepts once, before the team's first submission); the
participant's guide ``/how-to-submit`` (get
the client, the kit, the public sample, submit, read the result), the submission contract
it links (docs/submission.md), and what it hands out: ``/downloads`` (the client wheel, each
challenge's public sample)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from iugc.submissions import challenges, db, downloads, teams
from iugc.submissions.exceptions import ServiceError
from iugc.submissions.models import Challenge, utcnow
from iugc.submissions.uploads import quota
from iugc.leaderboard.web.forms import ActionForm
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


def phase_state(phase, now) -> str:
    """``upcoming``, ``open`` or ``closed`` at ``now`` (the timeline's badge)."""
    if phase.opens_at and now < phase.opens_at:
        return "upcoming"
    return "closed" if phase.closes_at and now >= phase.closes_at else "open"


def challenge_views(session, user, only: Challenge | None = None) -> list[dict]:
    """Each challenge (or ``only`` one) with its definition, phases (quota, cases, state) and the user's team."""
    now = utcnow()
    views = []
    rows = [only] if only is not None else session.execute(select(Challenge).order_by(Challenge.id)).scalars()
    for row in rows:
        definition = challenges.definition_of(row)
        team = teams.team_of(session, user, row.id) if user is not None else None
        phases = []
        for phase in row.phases:
            active = [d for d in phase.datasets if d.active]  # the one new evaluations use (none before an organizer adds it)
            phases.append({"row": phase, "quota": quota(session, team.id, phase) if team else None,
                           "cases": active[-1].n_cases if active else None, "state": phase_state(phase, now)})
        views.append({"row": row, "definition": definition, "phases": phases, "team": team,
                      "terms_accepted": team is None or team.terms_accepted_at is not None or teams.terms_of(row) is None})
    return views


@page(bp, "/", "public")
def overview():
    user = current_user.user if current_user.is_authenticated else None
    with service().sessions() as session:
        challenges = challenge_views(session, user)
        return render_template("challenge/overview.html", challenges=challenges)


@page(bp, "/how-to-submit", "public")
def guide():
    """The participant's guide: the client's install command, each challenge's public
    sample, the submit command for this server."""
    wheel = downloads.client_wheel(service().settings.instance)
    views = []
    with service().sessions() as session:
        for row in session.execute(select(Challenge).order_by(Challenge.id)).scalars():
            view = {"name": row.name, "title": challenges.definition_of(row).title, "first_phase": row.phases[0].slug if row.phases else None}
            try:
                downloads.sample_dataset(session, row.name)
                view["sample_url"] = url_for("challenge.sample", challenge=row.name, _external=True)
            except ServiceError as exc:
                view["sample_problem"] = str(exc)
            views.append(view)
    return render_template("challenge/guide.html", challenges=views, server=request.host_url.rstrip("/"),
                           first_phase=views[0]["first_phase"] if views else None, wheel=wheel.name if wheel else None,
                           wheel_url=url_for("challenge.client", name=wheel.name, _external=True) if wheel else None)


@page(bp, "/challenges/<name>/data", "public")
def data(name):
    """What the data are, their licence and source, the cases per phase and the public sample."""
    with service().sessions() as session:
        challenge = challenges.challenge_by_name(session, name)
        (view,) = challenge_views(session, None, only=challenge)
        try:
            downloads.sample_dataset(session, name)
            sample = url_for("challenge.sample", challenge=name)
        except ServiceError as exc:
            sample, view["sample_note"] = None, str(exc)
        return render_template("challenge/data.html", c=view, sample=sample)


@page(bp, "/challenges/<name>/terms", "public")
def terms(name):
    """The challenge's terms; a member of a team that has not accepted them gets the button."""
    with service().sessions() as session:
        challenge = challenges.challenge_by_name(session, name)
        team = teams.team_of(session, current_user.user, challenge.id) if current_user.is_authenticated else None
        return render_template("challenge/terms.html", challenge=challenge, definition=challenges.definition_of(challenge),
                               text=teams.terms_of(challenge), team=team, form=ActionForm())


@page(bp, "/challenges/<name>/terms", "user", methods=("POST",))
def accept_terms(name):
    ActionForm().validate_on_submit()  # CSRF is checked before the view; the form has no other field
    with db.transaction(service().sessions) as session:
        team = teams.accept_terms(session, current_user.user, challenges.challenge_by_name(session, name).id)
        flash(f"Team {team.name} accepted the terms of {name}; it may submit now.", "success")
    return redirect(request.args.get("next") if (request.args.get("next") or "").startswith("/phases/") else url_for("challenge.terms", name=name))


@page(bp, "/how-to-submit/contract", "public")
def contract():
    return render_template("challenge/contract.html", guide=guide_html())


@page(bp, "/downloads/<name>", "public")
def client(name):
    """The client wheel the guide's `pip install` names (``submissions.downloads``); nothing else."""
    wheel = downloads.client_wheel(service().settings.instance)
    if wheel is None or name != wheel.name:
        abort(404, "no such download; the how-to-submit page links the client the site serves")
    return send_file(wheel, as_attachment=True, download_name=wheel.name, mimetype="application/zip")


@page(bp, "/downloads/sample/<challenge>.zip", "public")
def sample(challenge):
    """The challenge's public sample as one zip (NotFound, or InvalidRequest when it is a hidden phase's truth)."""
    with service().sessions() as session:
        dataset, _ = downloads.sample_dataset(session, challenge)
        path = downloads.sample_zip(service().settings.instance, challenge, dataset)
    return send_file(path, as_attachment=True, download_name=f"{challenge}-sample.zip", mimetype="application/zip")
