"""Organizer pages under ``/admin``: phases (publish, re-evaluate; per phase its window and
quotas, its dataset, disqualifications), the queue and workers, the audit log,
leaderboard export as CSV and JSON. Every route is organizer-only; every change goes
through the same ``submissions`` function as the `iugc admin` command, which validates
it and writes the audit entry, in one transaction (a refusal changes nothing)."""
from __future__ import annotations

import csv
import io
import json

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from iugc.submissions import accounts, challenges, counting, db, disqualification, queue, reports
from iugc.submissions import audit as audit_log
from iugc.submissions.exceptions import Conflict, InvalidRequest, NotFound
from iugc.submissions.models import State, Submission
from iugc.leaderboard import boards
from iugc.leaderboard.web.forms import ActionForm, DatasetForm, InviteForm, PhaseForm, ReasonForm, SubmissionReasonForm
from iugc.leaderboard.web.security import page
from iugc.leaderboard.app import service

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE = 200



@page(bp, "", "organizer")
def index():
    with service().sessions() as session:
        return render_template("admin/index.html", **reports.organizer_overview(session), form=ActionForm(), reset_form=InviteForm(formdata=None))


@page(bp, "/phases/<slug>/publish", "organizer", methods=("POST",))
def publish(slug):
    ActionForm().validate_on_submit()  # CSRF is checked before the view; the form has no other field
    with db.transaction(service().sessions) as session:
        challenges.publish(session, slug, actor_id=current_user.id)
    flash(f"The results of {slug} are published.", "success")
    return redirect(url_for("admin.index"))


@page(bp, "/phases/<slug>/unpublish", "organizer", methods=("POST",))
def unpublish(slug):
    ActionForm().validate_on_submit()
    with db.transaction(service().sessions) as session:
        challenges.unpublish(session, slug, actor_id=current_user.id)
    flash(f"The results of {slug} are hidden again; publish to show them.", "success")
    return redirect(url_for("admin.index"))


@page(bp, "/phases/<slug>/reevaluate", "organizer", methods=("POST",))
def reevaluate(slug):
    created = queue.reevaluate(service().sessions, current_user.id, slug)
    service().wake()
    flash(f"{len(created)} evaluation(s) of {slug} queued again; the old ones are kept.", "success")
    return redirect(url_for("admin.index"))


@page(bp, "/submissions/<int:submission_id>/reevaluate", "organizer", methods=("POST",))
def reevaluate_one(submission_id):
    with service().sessions() as session:
        submission = session.get(Submission, submission_id)
        if submission is None:
            raise NotFound(f"no submission {submission_id}")
        slug = submission.phase.slug
    created = queue.reevaluate(service().sessions, current_user.id, slug, submission_id)
    service().wake()
    flash(f"Submission {submission_id} queued for evaluation {'again' if created else '— skipped: an evaluation is still pending'}.",
          "success" if created else "info")
    return redirect(url_for("submissions.detail", submission_id=submission_id))


@page(bp, "/submissions", "organizer")
def submissions():
    """Every submission, filterable; the failed ones can be evaluated again from here."""
    filters = {name: request.args.get(name, "")[:100] for name in ("phase", "team", "status")}
    with service().sessions() as session:
        rows = reports.all_submissions(session, **filters)
        phases = challenges.phase_slugs(session)
    return render_template("admin/submissions.html", rows=rows, filters=filters, phases=phases,
                           statuses=[s.value for s in State], form=ActionForm())


@page(bp, "/reset-link", "organizer", methods=("POST",))
def reset_link():
    """A password-reset link for a participant, shown to the organizer to pass on (for a site
    that sends no e-mail)."""
    form = InviteForm()
    if not form.validate_on_submit():
        raise InvalidRequest("give the e-mail address the participant registered with")
    email = form.email.data.strip().lower()
    with db.transaction(service().sessions) as session:
        token = accounts.reset_token(session, current_app.secret_key, email, actor_id=current_user.id)
    flash(f"Pass this link on to {email}; it works once, for {accounts.RESET_HOURS} hours: "
          f"{url_for('auth.reset', token=token, _external=True)}", "success")
    return redirect(url_for("admin.index"))


def _audit_filters() -> dict:
    return {"action": request.args.get("action", "")[:64], "actor": request.args.get("actor", "")[:254]}


@page(bp, "/audit", "organizer")
def audit():
    filters = _audit_filters()
    with service().sessions() as session:
        entries = [(entry, email, audit_log.readable(entry.detail)) for entry, email in audit_log.latest(session, AUDIT_PAGE, **filters)]
        return render_template("admin/audit.html", entries=entries, limit=AUDIT_PAGE, filters=filters)


@page(bp, "/audit.csv", "organizer")
def audit_csv():
    """Every entry the filters select (not only the page's latest), as CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["at_utc", "actor", "action", "target", "detail"])
    with service().sessions() as session:
        for entry, email in audit_log.latest(session, None, **_audit_filters()):
            detail = "; ".join(f"{name}: {value}" for name, value in audit_log.readable(entry.detail))
            writer.writerow([entry.at.strftime("%Y-%m-%d %H:%M:%S"), _cell(email or "system"), _cell(entry.action),
                             _cell(entry.target or ""), _cell(detail)])
    return Response(out.getvalue(), mimetype="text/csv", headers={"Content-Disposition": "attachment; filename=audit-log.csv"})


def _rows(slug: str) -> list[dict]:
    with service().sessions() as session:
        return boards.ranked(session, current_user.user, boards.state(session, slug))["rows"]


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


# ---- one phase: dashboard, window and quotas, dataset, disqualifications ------------------------------

def _phase_forms(phase) -> dict:
    shown = "%Y-%m-%dT%H:%M"
    settings = PhaseForm(formdata=None, data={
        "opens": phase.opens_at.strftime(shown) if phase.opens_at else "", "closes": phase.closes_at.strftime(shown) if phase.closes_at else "",
        "per_day": phase.submissions_per_day, "total": phase.submissions_total, "failures_count": phase.failures_count,
        "queue_without_worker": phase.queue_without_worker, "counts": phase.counts})
    return {"settings_form": settings, "dataset_form": DatasetForm(formdata=None), "reason_form": ReasonForm(formdata=None),
            "submission_form": SubmissionReasonForm(formdata=None)}


def _phase_page(slug: str, status: int = 200, **forms):
    """The phase's admin page; ``forms`` replace the blank ones (a refused form keeps its input and errors)."""
    with service().sessions() as session:
        phase = challenges.phase_by_slug(session, slug)
        rows = boards.ranked(session, current_user.user, boards.state(session, slug))["rows"]
        return render_template("admin/phase.html", phase=phase, dataset=challenges.active_dataset(session, phase.id), rows=rows,
                               dashboard=reports.phase_dashboard(session, phase), **reports.disqualifications(session, phase),
                               **{"action": ActionForm(), **_phase_forms(phase), **forms}), status


@page(bp, "/phases/<slug>", "organizer")
def phase(slug):
    return _phase_page(slug)


def _change(slug: str, operation, done: str, form, field=None, fields: dict | None = None):
    """Run ``operation(session)`` in one transaction; a refusal goes back on the page (400)
    with the service's message under the form field it names (``fields`` maps the service's
    field names to the form's; else under ``field``), and nothing is changed."""
    problem = None
    if form.validate_on_submit():
        try:
            with db.transaction(service().sessions) as session:
                operation(session)
        except (InvalidRequest, Conflict, NotFound) as exc:
            problem = str(exc)
            at = (fields or {}).get(getattr(exc, "field", None), field)
            if at is not None:
                at.errors = [*at.errors, problem]
        else:
            flash(done, "success")
            return redirect(url_for("admin.phase", slug=slug))
    problems = [f"{f.label.text}: {e}" for f in form if f.errors for e in f.errors] or [problem or "the form was not complete"]
    flash("Nothing was changed. " + "; ".join(problems), "error")
    return _phase_page(slug, 400, **{_FORM_NAMES[type(form)]: form})


@page(bp, "/phases/<slug>/settings", "organizer", methods=("POST",))
def phase_settings(slug):
    form = PhaseForm()

    def operation(session):
        challenges.update_phase(session, slug, opens_at=challenges.parse_time(form.opens.data, field="opens_at"),
                                closes_at=challenges.parse_time(form.closes.data, field="closes_at"),
                                submissions_per_day=form.per_day.data, submissions_total=form.total.data,
                                failures_count=bool(form.failures_count.data),
                                queue_without_worker=bool(form.queue_without_worker.data), actor_id=current_user.id)
        if form.counts.data:
            counting.set_default(session, slug, form.counts.data, actor_id=current_user.id)
    fields = {"opens_at": form.opens, "closes_at": form.closes, "submissions_per_day": form.per_day,
              "submissions_total": form.total, "failures_count": form.failures_count,
              "queue_without_worker": form.queue_without_worker, "counts": form.counts}
    return _change(slug, operation, f"The window and quotas of {slug} are saved.", form, form.per_day, fields)


@page(bp, "/phases/<slug>/dataset", "organizer", methods=("POST",))
def phase_dataset(slug):
    form = DatasetForm()

    def operation(session):
        challenges.add_dataset(session, slug, form.path.data.strip(), actor_id=current_user.id, expected_sha256=form.sha256.data)
    return _change(slug, operation, f"The dataset of {slug} is registered; new evaluations use it.", form, form.path)


@page(bp, "/phases/<slug>/teams/<int:team_id>/disqualify", "organizer", methods=("POST",))
def disqualify_team(slug, team_id):
    form = ReasonForm()
    return _change(slug, lambda s: disqualification.disqualify_team(s, team_id, form.reason.data, current_user.id),
                   "The team is disqualified: it left every leaderboard of its challenge.", form, form.reason)


@page(bp, "/phases/<slug>/teams/<int:team_id>/reinstate", "organizer", methods=("POST",))
def reinstate_team(slug, team_id):
    return _change(slug, lambda s: disqualification.reinstate_team(s, team_id, current_user.id),
                   "The team is reinstated.", ActionForm(), None)


@page(bp, "/phases/<slug>/submissions/disqualify", "organizer", methods=("POST",))
def disqualify_submission(slug):
    form = SubmissionReasonForm()

    def operation(session):
        submission = session.get(Submission, form.submission.data)
        if submission is not None and submission.phase.slug != slug:
            raise InvalidRequest(f"submission {submission.id} is in {submission.phase.slug}, not {slug}: disqualify it on that phase's page")
        disqualification.disqualify_submission(session, form.submission.data, form.reason.data, current_user.id)
    return _change(slug, operation, f"Submission {form.submission.data} is disqualified.", form, form.reason)


@page(bp, "/phases/<slug>/submissions/<int:submission_id>/reinstate", "organizer", methods=("POST",))
def reinstate_submission(slug, submission_id):
    return _change(slug, lambda s: disqualification.reinstate_submission(s, submission_id, current_user.id),
                   f"Submission {submission_id} is reinstated.", ActionForm(), None)


_FORM_NAMES = {PhaseForm: "settings_form", DatasetForm: "dataset_form", ReasonForm: "reason_form",
               SubmissionReasonForm: "submission_form", ActionForm: "action"}
