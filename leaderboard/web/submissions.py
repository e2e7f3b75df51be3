"""Uploads and the team's submissions: ``/phases/<slug>/upload``, ``/submissions`` (status
updating without a reload from ``/submissions/status.json``), ``/submissions/<id>``, cancel,
and a public case's overlay ``/submissions/<id>/cases/<case>/overlay.png``."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from iugc.submissions import challenges, counting, db, queue, reports, teams
from iugc.submissions.exceptions import Forbidden, InvalidRequest, ServiceError
from iugc.submissions.uploads import quota, submit, why_not
from iugc.submissions.models import Role, utcnow
from iugc.leaderboard.web.leaderboard import COLUMNS, defined_by
from iugc.leaderboard.web.forms import ActionForm, DescribeForm
from iugc.leaderboard.web import overlays
from iugc.leaderboard.web.security import page
from iugc.leaderboard.app import service
from iugc.leaderboard.errors import service_error_json

bp = Blueprint("submissions", __name__)
COUNTS = [("n_segmentation_cases", "Segmented cases", None), ("n_landmark_cases", "Cases with landmarks", None),
          ("n_excluded_aop", "Cases without AoP", None), ("n_errors", "Cases with errors", None)]
CASE_COLUMNS = [("dice_ps", "Dice PS"), ("dice_fh", "Dice FH"), ("dice_all", "Dice all"), ("hd_ps", "HD PS"), ("hd_fh", "HD FH"),
                ("asd_all", "ASD all"), ("re_ps1", "RE PS1 (px)"), ("re_ps2", "RE PS2 (px)"), ("re_fh1", "RE FH1 (px)"),
                ("mre", "MRE (px)"), ("aop_pred", "AoP pred (°)"), ("aop_gt", "AoP expert (°)"), ("aop_error", "ΔAoP (°)"),
                ("hsd_pred", "HSD pred"), ("hsd_gt", "HSD expert"), ("hsd_error", "ΔHSD"), ("p_standard_plane", "p(standard)")]



def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


@page(bp, "/phases/<slug>/upload", "user", methods=("GET", "POST"), limit="RATE_LIMIT_UPLOAD")
def upload(slug):
    if request.method == "POST":
        try:
            upload_file = request.files.get("image")
            if upload_file is None or not upload_file.filename:
                raise InvalidRequest("choose a `docker save` archive (docker save IMAGE -o image.tar) to upload")
            submission_id = submit(service().sessions, service().storage, current_user.id, slug, upload_file.stream)
        except ServiceError as exc:
            if not _wants_json():
                raise
            return service_error_json(exc)
        service().wake()
        target = url_for("submissions.mine", highlight=submission_id)
        if _wants_json():
            return jsonify({"id": submission_id, "status": "queued", "url": target}), 202
        flash(f"Submission {submission_id} received and queued.", "success")
        return redirect(target)
    with service().sessions() as session:
        phase = challenges.phase_by_slug(session, slug)
        team = teams.team_of(session, current_user.user, phase.challenge_id)
        closed = why_not(session, current_user.user, phase, utcnow()) if team else None
        left = quota(session, team.id, phase) if team else None
        terms = teams.terms_of(phase.challenge) if team and team.terms_accepted_at is None else None
        return render_template("submissions/upload.html", phase=phase, team=team, quota=left, closed=closed, terms=terms,
                               server=request.host_url.rstrip("/"), form=ActionForm())


@page(bp, "/submissions", "user")
def mine():
    with service().sessions() as session:
        groups = [(challenge, team, reports.submission_rows(session, current_user.user, team.id) if team else [])
                  for challenge, team in teams.teams_of(session, current_user.user)]
        return render_template("submissions/mine.html", groups=groups, form=ActionForm(),
                               highlight=request.args.get("highlight", type=int))


@page(bp, "/submissions/status.json", "user")
def status_json():
    """The caller's teams' submissions, for the page to refresh itself (polled)."""
    with service().sessions() as session:
        rows = [row for _, team in teams.teams_of(session, current_user.user) if team
                for row in reports.submission_rows(session, current_user.user, team.id)]
    response = jsonify({"submissions": rows})
    response.headers["Cache-Control"] = "no-store"
    return response


@page(bp, "/submissions/<int:submission_id>", "user")
def detail(submission_id):
    user = current_user.user
    with service().sessions() as session:
        status = reports.submission_status(session, user, submission_id)
        try:
            cases = reports.submission_cases(session, user, submission_id)["cases"]
            cases_note = None
        except Forbidden as exc:
            cases, cases_note = None, str(exc)
        submission = reports.visible_submission(session, user, submission_id)
        latest = submission.evaluations[-1]
        definition = challenges.definition_of(submission.phase.challenge)
        return render_template("submissions/detail.html", s=status, cases=cases, cases_note=cases_note,
                               overlays=bool(cases) and submission.phase.public_cases
                               and overlays.kept_masks(service().storage, reports.latest_success(submission)) is not None,
                               metric_columns=[c for c in COLUMNS + COUNTS if defined_by(c[0], definition)],
                               case_columns=[c for c in CASE_COLUMNS if defined_by(c[0], definition)],
                               queue_position=reports.queue_position(session, latest),
                               runtime=reports.runtime_seconds(latest), form=ActionForm(),
                               describe_form=DescribeForm(formdata=None, data={"description": status["description"] or "",
                                                                               "url": status["link"] or ""}),
                               is_member=current_user.user.role != Role.organizer)


@page(bp, "/submissions/<int:submission_id>/cases/<case_id>/overlay.png", "user")
def overlay(submission_id, case_id):
    """The predicted and expert masks of a public case with their AoP constructions (PNG)."""
    context = service()
    with context.sessions() as session:
        png = overlays.case_overlay(session, context.storage, current_user.user, submission_id, case_id,
                                    context.settings.instance / "cache" / "overlays")
    response = current_app.response_class(png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@page(bp, "/submissions/<int:submission_id>/cancel", "user", methods=("POST",))
def cancel(submission_id):
    state = queue.cancel(service().sessions, current_user.id, submission_id)
    flash(f"Submission {submission_id} {state.value}.", "info")
    return redirect(request.referrer if request.referrer and request.referrer.startswith(request.host_url) else url_for("submissions.mine"))


def _team_change(submission_id: int, operation, done: str, form):
    """Run a team's change of its submission in one transaction; its refusal is flashed
    (one sentence) and nothing changes; back to the submission's page either way."""
    if form.validate_on_submit():
        try:
            with db.transaction(service().sessions) as session:
                operation(session, current_user.user)
        except InvalidRequest as exc:
            flash(str(exc), "error")
        else:
            flash(done, "success")
    else:
        flash("The form was not sent from this page or the session ended; try again.", "error")
    return redirect(url_for("submissions.detail", submission_id=submission_id))


@page(bp, "/submissions/<int:submission_id>/describe", "user", methods=("POST",))
def describe(submission_id):
    form = DescribeForm()
    return _team_change(submission_id, lambda session, user: counting.describe(session, user, submission_id, form.description.data,
                                                                               form.url.data),
                        "Saved: the leaderboard shows it on this submission's row.", form)


@page(bp, "/submissions/<int:submission_id>/choose", "user", methods=("POST",))
def choose(submission_id):
    return _team_change(submission_id, lambda session, user: counting.choose(session, user, submission_id),
                        f"Submission {submission_id} now counts on the leaderboard.", ActionForm())


@page(bp, "/submissions/<int:submission_id>/unchoose", "user", methods=("POST",))
def unchoose(submission_id):
    return _team_change(submission_id, lambda session, user: counting.unchoose(session, user, submission_id),
                        "Your choice is cleared: the phase's rule (your best or your latest scored submission) counts again.",
                        ActionForm())
