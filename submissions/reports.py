"""What a viewer may see of the records, as plain dicts: phases with the caller's quota,
a submission's status, its per-case values and a phase's leaderboard. The API serves
these as JSON and the web pages (a later issue) render the same dicts.

Visibility rules: a participant sees only their own team's submissions (another team's
is "not found"); the log tail only in phases whose logs are visible to participants;
per-case values only in phases with public cases; results of a final-test phase only
once an organizer has published them. Organizers see everything. Dataset paths and
worker hosts are never part of what a participant gets.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, aliased, joinedload, selectinload

from iugc.evaluator.ranking import rank_teams
from iugc.submissions import capacity, challenges, teams
from iugc.submissions.exceptions import Forbidden, InvalidRequest, NotFound
from iugc.submissions.models import TERMINAL, CaseResult, Challenge, Evaluation, LeaderboardEntry, Phase, Role, State, Submission, Team, User, utcnow
from iugc.submissions.uploads import quota


def _iso(value):
    return value.isoformat() if value is not None else None


def results_hidden(phase: Phase, user: User) -> bool:
    return hidden_from(phase, user.role)


def hidden_from(phase: Phase, role: Role) -> bool:
    """Whether a viewer of ``role`` may not see ``phase``'s results yet (a final test's,
    before the organizers publish them)."""
    return role != Role.organizer and phase.kind == "final-test" and not phase.results_published


def phases(session: Session, user: User) -> list[dict]:
    rows = []
    workers = capacity.live(session)
    for phase in session.execute(select(Phase).order_by(Phase.id)).scalars():
        team = teams.team_of(session, user, phase.challenge_id)
        rows.append({
            "slug": phase.slug, "challenge": phase.challenge.name, "name": phase.name, "title": phase.title,
            "kind": phase.kind, "opens": _iso(phase.opens_at), "closes": _iso(phase.closes_at),
            "limits": phase.limits, "results_published": phase.results_published,
            "failures_count_against_quota": phase.failures_count, "counts": phase.counts,
            "cannot_evaluate": capacity.cannot_run(phase, workers),
            "quota": {"submissions_per_day": phase.submissions_per_day, "submissions_total": phase.submissions_total,
                      **({"team": team.name, **quota(session, team.id, phase).as_dict()} if team else {})},
        })
    return rows


def visible_submission(session: Session, user: User, submission_id: int, *options) -> Submission:
    """The submission if ``user`` may see it, else NotFound; ``options``: SQLAlchemy loader
    options for what the caller reads of it (its phase and team always come along)."""
    submission = session.execute(select(Submission).options(joinedload(Submission.phase), joinedload(Submission.team), *options)
                                 .where(Submission.id == submission_id)).scalar_one_or_none()
    if submission is None:
        raise NotFound(f"no submission {submission_id}")
    if user.role != Role.organizer:
        team = teams.team_of(session, user, submission.phase.challenge_id)
        if team is None or team.id != submission.team_id:
            raise NotFound(f"no submission {submission_id}")  # another team's: not even its existence
    return submission


def latest_success(submission: Submission) -> Evaluation | None:
    done = [e for e in submission.evaluations if e.status == State.succeeded]
    return done[-1] if done else None


def submission_status(session: Session, user: User, submission_id: int) -> dict:
    """Three SELECTs whatever the number of evaluations: the submission with its phase and
    team, its evaluations, their histories."""
    submission = visible_submission(session, user, submission_id, selectinload(Submission.evaluations).selectinload(Evaluation.history))
    phase = submission.phase
    latest = submission.evaluations[-1]
    organizer = user.role == Role.organizer
    evaluations = []
    for e in submission.evaluations:
        entry = {
            "number": e.number, "status": e.status.value, "attempts": e.attempts,
            "failure": e.failure, "error": e.error, "platform_fault": e.platform_fault,
            "created": _iso(e.created_at), "queued": _iso(e.queued_at), "started": _iso(e.started_at), "finished": _iso(e.finished_at),
            "history": [{"from": c.from_state.value if c.from_state else None, "to": c.to_state.value, "at": _iso(c.at), "note": c.note if organizer else None}
                        for c in e.history],
            "image_digest": e.image_digest, "evaluator_version": e.evaluator_version,
            "definition_sha256": e.definition_sha256, "manifest_sha256": e.manifest_sha256, "limits": e.limits,
        }
        if organizer or phase.logs_visible:
            entry["logs"] = e.log_tail
        if organizer:
            entry.update(worker_host=e.worker_host, worker_id=e.worker_id)
        evaluations.append(entry)
    result = latest_success(submission)
    standing = result or latest  # what the submission's status, failure and score come from
    hidden = results_hidden(phase, user)
    return {
        "id": submission.id, "phase": phase.slug, "team": submission.team.name, "status": submission.status.value,
        "created": _iso(submission.created_at), "archive_sha256": submission.archive_sha256, "archive_size": submission.archive_size,
        "image_digest": submission.image_digest, "counts_against_quota": submission.counts_against_quota,
        "description": submission.description, "link": submission.description_url, "chosen": submission.chosen_at is not None,
        "counts": phase.counts,
        "disqualified": submission.disqualified_reason or submission.team.disqualified_reason,
        "done": latest.status in TERMINAL,
        "waiting_for": capacity.waiting_for(latest.limits, capacity.live(session)) if latest.status == State.queued else None,
        "failure": standing.failure, "error": standing.error,
        "reevaluation": None if latest is standing else {  # a later evaluation that has not (yet) replaced the result
            "number": latest.number, "status": latest.status.value, "failure": latest.failure, "error": latest.error},
        "results_hidden": hidden,
        "aggregates": None if hidden or result is None else result.aggregates,
        "score": None if hidden or result is None else result.score,
        "evaluations": evaluations,
    }


def submission_cases(session: Session, user: User, submission_id: int) -> dict:
    submission = visible_submission(session, user, submission_id)
    phase = submission.phase
    if user.role != Role.organizer and (not phase.public_cases or results_hidden(phase, user)):
        raise Forbidden(f"phase {phase.slug} does not show per-case values to participants")
    result = latest_success(submission)
    cases = {c.case_id: c.values for c in result.cases} if result else {}
    return {"id": submission.id, "evaluation": result.number if result else None, "cases": cases}


def case_values(session: Session, evaluation_ids: list[int]) -> dict[int, dict[str, dict]]:
    """``{evaluation id: {case id: values}}`` of the given evaluations, in one query (an
    evaluation without per-case values is absent)."""
    cases: dict[int, dict[str, dict]] = {}
    for evaluation_id, case_id, values in session.execute(
            select(CaseResult.evaluation_id, CaseResult.case_id, CaseResult.values).where(CaseResult.evaluation_id.in_(evaluation_ids))):
        cases.setdefault(evaluation_id, {})[case_id] = values
    return cases


_COUNTED = aliased(Submission)
_LEADERBOARD = (  # one round trip: the phase (visibility, definition) and its entries; built once
    select(Phase.kind, Phase.name.label("phase_name"), Phase.results_published, Challenge,  # the challenge without its definition (deferred)
           LeaderboardEntry.submission_id, LeaderboardEntry.evaluation_id, Team.name, Evaluation.aggregates,
           Submission.created_at, Submission.description, Submission.description_url, Submission.chosen_at,
           Evaluation.finished_at, Evaluation.evaluator_version,
           select(func.count()).where(_COUNTED.team_id == LeaderboardEntry.team_id, _COUNTED.phase_id == Phase.id,
                                      _COUNTED.status == State.succeeded)  # moves only with the entries, so kept rows stay true
           .correlate(LeaderboardEntry, Phase).scalar_subquery().label("n_submissions"))
    .join(Challenge, Challenge.id == Phase.challenge_id)
    .outerjoin(LeaderboardEntry, LeaderboardEntry.phase_id == Phase.id)
    .outerjoin(Team, Team.id == LeaderboardEntry.team_id).outerjoin(Evaluation, Evaluation.id == LeaderboardEntry.evaluation_id)
    .outerjoin(Submission, Submission.id == LeaderboardEntry.submission_id)
    .where(Phase.slug == bindparam("slug")))


def leaderboard(session: Session, user: User, slug: str, method: str | None = None) -> dict:
    """Ranked rows, one per team, by ``method`` (default the phase's ranking method, as the
    challenge definition names it; ``default_method`` says which): each team's best-scoring submission (its latest successful evaluation; ties:
    the later submission), read from ``leaderboard_entries``, with when it was submitted
    (``submitted``, UTC), how many of the team's submissions in the phase are scored, and
    the evaluation the row comes from (``evaluation``: its id; ``evaluated``: when it
    finished, UTC; ``evaluator``: the platform version that scored it), and what the team
    says of it (``description``, ``link``; ``chosen``: the team chose it to count, else it
    is the team's best)."""
    found = session.execute(_LEADERBOARD, {"slug": slug}).all()
    if not found:
        challenges.phase_by_slug(session, slug)  # raises its NotFound, naming the phases there are
    first = found[0]
    if results_hidden(first, user):
        raise Forbidden(f"the results of {slug} are not published yet")
    definition = challenges.definition_of(first.Challenge)
    if method is not None and method not in definition.ranking.methods:
        raise InvalidRequest(f"ranking method must be one of {', '.join(definition.ranking.methods)}, got {method!r}")
    default = next((p.ranking_method for p in definition.phases if p.name == first.phase_name), definition.ranking.methods[0])
    asked, method = method, method or default
    entries = [r for r in found if r.submission_id is not None]
    if not entries:
        return {"phase": slug, "method": method, "default_method": default, "rows": []}
    teams = {str(r.submission_id): r.name for r in entries}
    about = {str(r.submission_id): {"submitted": r.created_at.strftime("%Y-%m-%dT%H:%MZ"), "submissions": r.n_submissions,
                                    "evaluated": r.finished_at.strftime("%Y-%m-%dT%H:%MZ") if r.finished_at else None,
                                    "evaluation": r.evaluation_id, "evaluator": r.evaluator_version,
                                    "description": r.description, "link": r.description_url, "chosen": r.chosen_at is not None}
             for r in entries}
    results = {str(r.submission_id): {"aggregates": r.aggregates or {}} for r in entries}
    if method == "test-then-rank":  # paired tests on the per-case values of each team's ranked evaluation
        cases = case_values(session, [r.evaluation_id for r in entries])
        for r in entries:
            results[str(r.submission_id)]["cases"] = cases.get(r.evaluation_id, {})
    note = None
    try:
        ranking = rank_teams(results, definition, method)
    except ValueError as exc:  # test-then-rank: no per-case values, or teams scored on different cases
        if asked is not None or method == "score":
            raise InvalidRequest(f"{slug} cannot be ranked by {method}: {exc}") from None
        note = f"Shown by score: this phase ranks by {method}, which cannot rank these results yet ({exc})."
        method, ranking = "score", rank_teams(results, definition, "score")
    rows = []
    for ranked in ranking:
        sid = ranked.pop("team")
        ranked.pop("p_values", None)  # every pair's p-values: the analysis shows them, not each row
        rows.append({"team": teams[sid], "submission": int(sid), **about[sid], **ranked})
    rows.sort(key=lambda r: (r["rank"], r["team"]))
    return {"phase": slug, "method": method, "default_method": default, "rows": rows, **({"note": note} if note else {})}


def queue_position(session: Session, evaluation: Evaluation) -> int | None:
    """1 for the next queued evaluation to be claimed (oldest first), None unless queued."""
    if evaluation.status != State.queued:
        return None
    ahead = session.execute(select(func.count()).select_from(Evaluation).where(
        Evaluation.status == State.queued, Evaluation.id < evaluation.id)).scalar()
    return ahead + 1


def runtime_seconds(evaluation: Evaluation, now: dt.datetime | None = None) -> float | None:
    """Seconds the evaluation has run (so far, while running); None before it starts."""
    if evaluation.started_at is None:
        return None
    end = evaluation.finished_at or (now or utcnow())
    return max(0.0, (end - evaluation.started_at).total_seconds())


def submission_rows(session: Session, user: User, team_id: int) -> list[dict]:
    """The team's submissions, newest first, as the viewer may see them, each with the
    latest evaluation's queue position and runtime."""
    ids = session.execute(select(Submission.id).where(Submission.team_id == team_id).order_by(Submission.id.desc())).scalars().all()
    rows = []
    for submission_id in ids:
        status = submission_status(session, user, submission_id)
        latest = session.get(Submission, submission_id).evaluations[-1]
        last = status["evaluations"][-1]
        rows.append({
            "id": status["id"], "phase": status["phase"], "status": status["status"], "done": status["done"],
            "created": status["created"], "score": status["score"], "results_hidden": status["results_hidden"],
            "failure": status["failure"], "error": status["error"], "logs": last.get("logs"),
            "queue_position": queue_position(session, latest), "runtime_seconds": runtime_seconds(latest),
            "counts_against_quota": status["counts_against_quota"], "disqualified": status["disqualified"],
            "reevaluation": status["reevaluation"], "waiting_for": status["waiting_for"],
        })
    return rows


def all_submissions(session: Session, phase: str = "", team: str = "", status: str = "", limit: int = 500) -> list[dict]:
    """Every submission of every team (for organizers), newest first, with its latest
    evaluation's status and failure and the score that stands (its last successful
    evaluation's); filtered by phase slug, team name (contains) and latest status. An unknown status is an error naming the known ones."""
    if status and status not in {s.value for s in State}:
        raise InvalidRequest(f"no status {status!r}; the statuses are {', '.join(s.value for s in State)}")
    latest = select(func.max(Evaluation.id)).group_by(Evaluation.submission_id).scalar_subquery()
    query = (select(Submission, Evaluation, Team.name, Phase.slug)
             .join(Evaluation, Evaluation.submission_id == Submission.id).join(Team, Submission.team_id == Team.id)
             .join(Phase, Submission.phase_id == Phase.id).where(Evaluation.id.in_(latest)))
    if phase:
        query = query.where(Phase.slug == phase)
    if team:
        query = query.where(Team.name.contains(team, autoescape=True))
    if status:
        query = query.where(Evaluation.status == State(status))
    return [{"id": s.id, "phase": slug, "team": name, "created": s.created_at, "status": e.status.value, "score": s.score,
             "failure": e.failure, "error": e.error, "counts_against_quota": s.counts_against_quota,
             "evaluations": e.number, "disqualified": s.disqualified_at is not None}
            for s, e, name, slug in session.execute(query.order_by(Submission.id.desc()).limit(limit)).all()]


def organizer_overview(session: Session) -> dict:
    """What the organizer's front page shows: every phase with its submission count and
    active dataset, evaluations counted by status, the queued and running ones (with
    their submission and team), oldest first, the live workers with what each gives one
    evaluation, the phases none of them can run with what is missing, and every team with
    its challenge and who accepted the challenge's terms for it, and when."""
    phases = session.execute(select(Phase).order_by(Phase.id)).scalars().all()
    workers = capacity.live(session)
    return {
        "workers": workers,
        "unrunnable": capacity.unrunnable(phases, workers),
        "phases": phases,
        "counts": dict(session.execute(select(Submission.phase_id, func.count()).group_by(Submission.phase_id)).all()),
        "states": dict(session.execute(select(Evaluation.status, func.count()).group_by(Evaluation.status)).all()),
        "running": session.execute(
            select(Evaluation, Submission, Team).join(Submission, Evaluation.submission_id == Submission.id)
            .join(Team, Submission.team_id == Team.id)
            .where(Evaluation.status.in_([State.running, State.queued])).order_by(Evaluation.id)).all(),
        "datasets": {p.id: challenges.active_dataset(session, p.id) for p in phases},
        "teams": session.execute(select(Team, Challenge.name, User.email).join(Challenge, Team.challenge_id == Challenge.id)
                                 .outerjoin(User, User.id == Team.terms_accepted_by_id).order_by(Challenge.id, Team.name)).all(),
    }


def phase_dashboard(session: Session, phase: Phase, now: dt.datetime | None = None) -> dict:
    """How a phase is doing, for its organizer: submissions in the last 24 hours and in all,
    teams that submitted, evaluations finished in the last 24 hours by status, the failed
    ones among them by reason (with a count), what waits and runs now, how many workers
    are live and what they lack to run it (None: one can, or none is live), and the workers holding its running
    evaluations (with their last heartbeat)."""
    now = now or utcnow()
    day = now - dt.timedelta(hours=24)
    in_phase = Submission.phase_id == phase.id
    live = capacity.live(session)
    recent = session.execute(select(Evaluation.status, func.count()).join(Submission, Evaluation.submission_id == Submission.id)
                             .where(in_phase, Evaluation.finished_at >= day).group_by(Evaluation.status)).all()
    reasons = session.execute(select(Evaluation.failure, func.count()).join(Submission, Evaluation.submission_id == Submission.id)
                              .where(in_phase, Evaluation.status == State.failed, Evaluation.finished_at >= day)
                              .group_by(Evaluation.failure).order_by(func.count().desc())).all()
    pending = dict(session.execute(select(Evaluation.status, func.count()).join(Submission, Evaluation.submission_id == Submission.id)
                                   .where(in_phase, Evaluation.status.in_([State.queued, State.running])).group_by(Evaluation.status)).all())
    workers = session.execute(select(Evaluation.worker_id, Evaluation.worker_host, func.count(), func.max(Evaluation.heartbeat_at))
                              .join(Submission, Evaluation.submission_id == Submission.id)
                              .where(in_phase, Evaluation.status == State.running).group_by(Evaluation.worker_id, Evaluation.worker_host)
                              .order_by(Evaluation.worker_id)).all()
    return {
        "submissions_today": session.execute(select(func.count()).where(in_phase, Submission.created_at >= day)).scalar(),
        "submissions": session.execute(select(func.count()).where(in_phase)).scalar(),
        "teams": session.execute(select(func.count(func.distinct(Submission.team_id))).where(in_phase)).scalar(),
        "finished_today": {status.value: n for status, n in recent},
        "failures_today": [(failure or "unknown", n) for failure, n in reasons],
        "queued": pending.get(State.queued, 0), "running": pending.get(State.running, 0),
        "live_workers": len(live), "missing": capacity.missing(phase.limits, live),
        "workers": [{"id": w, "host": h, "running": n, "heartbeat": beat} for w, h, n, beat in workers],
    }


def disqualifications(session: Session, phase: Phase) -> dict:
    """A phase's teams by name (id), and its disqualified teams and submissions (with team name)."""
    return {
        "team_ids": dict(session.execute(select(Team.name, Team.id).where(Team.challenge_id == phase.challenge_id)).all()),
        "teams_out": session.execute(select(Team).where(Team.challenge_id == phase.challenge_id, Team.disqualified_at.is_not(None))
                                     .order_by(Team.name)).scalars().all(),
        "submissions_out": session.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id).where(
            Submission.phase_id == phase.id, Submission.disqualified_at.is_not(None)).order_by(Submission.id)).all(),
    }
