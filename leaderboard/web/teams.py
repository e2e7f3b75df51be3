"""Teams: ``/teams`` (members, invitation link, leave), create, join by link."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from submissions import admin, db
from submissions.exceptions import Conflict, InvalidRequest, NotFound
from submissions.models import Team
from leaderboard.web import queries
from leaderboard.web.forms import ActionForm, TeamForm
from leaderboard.web.security import page

bp = Blueprint("teams", __name__, url_prefix="/teams")


def _sessions():
    return current_app.extensions["iugc"].sessions


def _render(status=200, **forms):
    with _sessions()() as session:
        rows = []
        for challenge, team in queries.teams_of(session, current_user.user):
            rows.append({
                "challenge": challenge, "team": team,
                "members": queries.members(session, team.id) if team else [],
                "invite": url_for("teams.join", token=queries.invitation_token(current_app.secret_key, team.id), _external=True) if team else None,
                "form": forms.get(challenge.name) or TeamForm(challenge=challenge.name, formdata=None),
            })
        return render_template("teams/index.html", rows=rows, action=ActionForm()), status


@page(bp, "", "user")
def index():
    return _render()


@page(bp, "/create", "user", methods=("POST",))
def create():
    form = TeamForm()
    if form.validate_on_submit():
        try:
            with db.transaction(_sessions()) as session:
                team = admin.create_team(session, session.merge(current_user.user), form.name.data, form.challenge.data)
                name = team.name
        except (InvalidRequest, Conflict, NotFound) as exc:
            form.name.errors.append(str(exc))
            flash(f"The team was not created: {exc}", "error")
        else:
            flash(f"Team {name} created. Share the invitation link with your team-mates.", "success")
            return redirect(url_for("teams.index"))
    return _render(400, **{form.challenge.data or "": form})


@page(bp, "/join/<token>", "user", methods=("GET", "POST"))
def join(token):
    form = ActionForm()
    with db.transaction(_sessions()) as session:
        team = queries.team_of_invitation(session, current_app.secret_key, token)
        if form.validate_on_submit():
            queries.join_team(session, session.merge(current_user.user), team)
            flash(f"You joined {team.name}.", "success")
            return redirect(url_for("teams.index"))
        return render_template("teams/join.html", team=team, members=queries.members(session, team.id), form=form)


@page(bp, "/<int:team_id>/leave", "user", methods=("POST",))
def leave(team_id):
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    with db.transaction(_sessions()) as session:
        if session.get(Team, team_id) is None:
            raise NotFound(f"no team {team_id}")
        queries.leave_team(session, current_user.user, team_id)
    flash("You left the team.", "info")
    return redirect(url_for("teams.index"))
