"""Organizer pages under ``/admin``: phases (publish, re-evaluate), the queue and workers,
the audit log, leaderboard export as CSV and JSON. Every route is organizer-only."""
from __future__ import annotations

import csv
import io
import json

from flask import Blueprint, Response, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import func, select

from submissions import admin, db, queue, reports
from submissions.exceptions import NotFound
from submissions.models import AuditEntry, Evaluation, Phase, State, Submission, Team, User
from leaderboard import boards
from leaderboard.web.forms import ActionForm
from leaderboard.web.security import page

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE = 200


def _sessions():
    return current_app.extensions["iugc"].sessions


@page(bp, "", "organizer")
def index():
    with _sessions()() as session:
        phases = session.execute(select(Phase).order_by(Phase.id)).scalars().all()
        counts = dict(session.execute(select(Submission.phase_id, func.count()).group_by(Submission.phase_id)).all())
        states = dict(session.execute(select(Evaluation.status, func.count()).group_by(Evaluation.status)).all())
        running = session.execute(
            select(Evaluation, Submission, Team).join(Submission, Evaluation.submission_id == Submission.id)
            .join(Team, Submission.team_id == Team.id)
            .where(Evaluation.status.in_([State.running, State.queued])).order_by(Evaluation.id)).all()
        return render_template("admin/index.html", phases=phases, counts=counts, states=states, running=running,
                               datasets={p.id: admin.active_dataset(session, p.id) for p in phases}, form=ActionForm())


@page(bp, "/phases/<slug>/publish", "organizer", methods=("POST",))
def publish(slug):
    ActionForm().validate_on_submit()  # CSRF is checked before the view; the form has no other field
    with db.transaction(_sessions()) as session:
        admin.publish(session, slug, actor_id=current_user.id)
    flash(f"The results of {slug} are published.", "success")
    return redirect(url_for("admin.index"))


@page(bp, "/phases/<slug>/reevaluate", "organizer", methods=("POST",))
def reevaluate(slug):
    created = queue.reevaluate(_sessions(), current_user.id, slug)
    current_app.extensions["iugc"].wake()
    flash(f"{len(created)} evaluation(s) of {slug} queued again; the old ones are kept.", "success")
    return redirect(url_for("admin.index"))


@page(bp, "/submissions/<int:submission_id>/reevaluate", "organizer", methods=("POST",))
def reevaluate_one(submission_id):
    with _sessions()() as session:
        submission = session.get(Submission, submission_id)
        if submission is None:
            raise NotFound(f"no submission {submission_id}")
        slug = submission.phase.slug
    created = queue.reevaluate(_sessions(), current_user.id, slug, submission_id)
    current_app.extensions["iugc"].wake()
    flash(f"Submission {submission_id} queued for evaluation {'again' if created else '— skipped: an evaluation is still pending'}.",
          "success" if created else "info")
    return redirect(url_for("submissions.detail", submission_id=submission_id))


@page(bp, "/audit", "organizer")
def audit():
    with _sessions()() as session:
        entries = session.execute(select(AuditEntry, User.email).outerjoin(User, AuditEntry.actor_id == User.id)
                                  .order_by(AuditEntry.id.desc()).limit(AUDIT_PAGE)).all()
        return render_template("admin/audit.html", entries=entries, limit=AUDIT_PAGE)


def _rows(slug: str) -> list[dict]:
    with _sessions()() as session:
        return boards.ranked(session, current_user.user, slug)[1]["rows"]


@page(bp, "/phases/<slug>/leaderboard.json", "organizer")
def export_json(slug):
    body = json.dumps({"phase": slug, "rows": _rows(slug)}, indent=2, allow_nan=False)
    return Response(body, mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename={slug}-leaderboard.json"})


def _cell(value):
    """A CSV cell; text a spreadsheet would run as a formula (=, +, -, @) is quoted.

    >>> _cell("=HYPERLINK(1)"), _cell(None), _cell(0.5)
    ("'=HYPERLINK(1)", '', 0.5)
    """
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@page(bp, "/phases/<slug>/leaderboard.csv", "organizer")
def export_csv(slug):
    rows = _rows(slug)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ["rank", "team", "submission", "score"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={slug}-leaderboard.csv"})
