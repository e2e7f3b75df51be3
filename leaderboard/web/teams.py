"""Teams: ``/teams`` (members, invitation link, invitations by e-mail, leave), create,
join by link, accept an e-mail invitation (``iugc.leaderboard.web.mail``)."""
from __future__ import annotations

import smtplib

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from iugc.submissions import db, teams
from iugc.submissions.exceptions import Conflict, InvalidRequest, NotFound
from iugc.submissions.models import Team
from iugc.leaderboard.web import mail
from iugc.leaderboard.web.forms import ActionForm, InviteForm, TeamForm
from iugc.leaderboard.web.security import page
from iugc.leaderboard.app import service

bp = Blueprint("teams", __name__, url_prefix="/teams")



def _render(status=200, **forms):
    with service().sessions() as session:
        rows = []
        for challenge, team in teams.teams_of(session, current_user.user):
            rows.append({
                "challenge": challenge, "team": team,
                "members": teams.members(session, team.id) if team else [],
                "invite": url_for("teams.join", token=teams.invitation_token(current_app.secret_key, team.id), _external=True) if team else None,
                "form": forms.get(challenge.name) or TeamForm(challenge=challenge.name, formdata=None),
                "pending": teams.pending_invitations(session, team.id) if team else [],
                "invite_form": forms.get(f"invite:{team.id}") if team and forms.get(f"invite:{team.id}") else InviteForm(formdata=None),
            })
        return render_template("teams/index.html", rows=rows, action=ActionForm(), mail=bool(current_app.config["SMTP_URL"])), status


@page(bp, "", "user")
def index():
    return _render()


@page(bp, "/create", "user", methods=("POST",))
def create():
    form = TeamForm()
    if form.validate_on_submit():
        try:
            with db.transaction(service().sessions) as session:
                team = teams.create_team(session, session.merge(current_user.user), form.name.data, form.challenge.data)
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
    with db.transaction(service().sessions) as session:
        team = teams.team_of_invitation(session, current_app.secret_key, token)
        if form.validate_on_submit():
            teams.join_team(session, session.merge(current_user.user), team)
            flash(f"You joined {team.name}.", "success")
            return redirect(url_for("teams.index"))
        return render_template("teams/join.html", team=team, members=teams.members(session, team.id), form=form)


@page(bp, "/<int:team_id>/leave", "user", methods=("POST",))
def leave(team_id):
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    with db.transaction(service().sessions) as session:
        if session.get(Team, team_id) is None:
            raise NotFound(f"no team {team_id}")
        teams.leave_team(session, current_user.user, team_id)
    flash("You left the team.", "info")
    return redirect(url_for("teams.index"))


@page(bp, "/<int:team_id>/invite", "user", methods=("POST",))
def invite(team_id):
    """Invite an e-mail address: the link goes out by mail, or is shown to pass on."""
    form = InviteForm()
    if not form.validate_on_submit():
        flash("No invitation was made: give an e-mail address.", "error")
        return _render(400, **{f"invite:{team_id}": form})
    try:
        with db.transaction(service().sessions) as session:
            invitation, token = teams.invite(session, session.merge(current_user.user), team_id, form.email.data)
            to, team, expires = invitation.email, invitation.team.name, invitation.expires_at
    except (InvalidRequest, NotFound) as exc:
        form.email.errors = [*form.email.errors, str(exc)]
        flash(f"No invitation was made: {exc}", "error")
        return _render(400, **{f"invite:{team_id}": form})
    link = url_for("teams.accept_invitation", token=token, _external=True)
    smtp_url = current_app.config["SMTP_URL"]
    if not smtp_url:
        flash(f"No mail server is configured on this site (IUGC_SMTP_URL), so nothing was sent: pass this link on to {to} "
              f"yourself (it is shown once): {link}", "info")
        return redirect(url_for("teams.index"))
    try:
        mail.send(smtp_url, mail.invitation_message(current_app.config["MAIL_FROM"], to, team, current_user.email, link, expires))
    except (OSError, smtplib.SMTPException) as exc:
        current_app.logger.warning("sending the invitation mail failed: %s", exc)
        flash(f"The mail server did not take the invitation ({type(exc).__name__}), so nothing was sent: pass this link on to "
              f"{to} yourself (it is shown once): {link}", "error")
        return redirect(url_for("teams.index"))
    flash(f"Invitation sent to {to}; it can be used once within {teams.INVITE_DAYS} days.", "success")
    return redirect(url_for("teams.index"))


@page(bp, "/invitations/<token>", "user", methods=("GET", "POST"))
def accept_invitation(token):
    form = ActionForm()
    with db.transaction(service().sessions) as session:
        user = session.merge(current_user.user)
        if form.validate_on_submit():
            team = teams.accept_invitation(session, token, user)
            flash(f"You joined {team.name}.", "success")
            return redirect(url_for("teams.index"))
        invitation = teams.find_invitation(session, token, user)
        return render_template("teams/join.html", team=invitation.team, members=teams.members(session, invitation.team_id), form=form)
