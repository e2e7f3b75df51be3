"""What the pages need beyond ``submissions.reports``, as functions over the service's
records: a team's submissions with queue position and runtime, joining and leaving a
team, signed invitation links. Visibility rules stay in ``submissions.reports``: every
row here is built from ``reports.submission_status`` for the viewer.
"""
from __future__ import annotations

import datetime as dt

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from submissions import admin, reports
from submissions.exceptions import Conflict, InvalidRequest, NotFound
from submissions.models import Challenge, Evaluation, Membership, State, Submission, Team, User, utcnow

INVITE_DAYS = 7


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
        status = reports.submission_status(session, user, submission_id)
        latest = session.get(Submission, submission_id).evaluations[-1]
        last = status["evaluations"][-1]
        rows.append({
            "id": status["id"], "phase": status["phase"], "status": status["status"], "done": status["done"],
            "created": status["created"], "score": status["score"], "results_hidden": status["results_hidden"],
            "failure": status["failure"], "error": status["error"], "logs": last.get("logs"),
            "queue_position": queue_position(session, latest), "runtime_seconds": runtime_seconds(latest),
            "counts_against_quota": status["counts_against_quota"], "disqualified": status["disqualified"],
        })
    return rows


def teams_of(session: Session, user: User) -> list[tuple[Challenge, Team | None]]:
    """Each challenge with the user's team in it (None where they have none)."""
    challenges = session.execute(select(Challenge).order_by(Challenge.id)).scalars().all()
    return [(c, admin.team_of(session, user, c.id)) for c in challenges]


def members(session: Session, team_id: int) -> list[User]:
    return session.execute(select(User).join(Membership).where(Membership.team_id == team_id).order_by(Membership.id)).scalars().all()


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="iugc-team-invitation")


def invitation_token(secret: str, team_id: int) -> str:
    """A signed token naming the team, valid for ``INVITE_DAYS`` days."""
    return _serializer(secret).dumps({"team": team_id})


def team_of_invitation(session: Session, secret: str, token: str) -> Team:
    """The team an invitation names; InvalidRequest when it is forged or expired."""
    try:
        team_id = _serializer(secret).loads(token, max_age=INVITE_DAYS * 86400)["team"]
    except SignatureExpired:
        raise InvalidRequest(f"this invitation is older than {INVITE_DAYS} days; ask the team for a new link") from None
    except (BadSignature, KeyError, TypeError):
        raise InvalidRequest("this invitation link is not valid; ask the team for the link again") from None
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound("the team of this invitation no longer exists")
    return team


def join_team(session: Session, user: User, team: Team) -> None:
    """Add ``user`` to ``team`` (one team per user per challenge)."""
    if admin.team_of(session, user, team.challenge_id) is not None:
        raise Conflict(f"you are already in a team of {team.challenge.name}; leave it first")
    try:
        with session.begin_nested():
            session.add(Membership(team_id=team.id, user_id=user.id, challenge_id=team.challenge_id))
            session.flush()
    except IntegrityError:
        raise Conflict(f"you joined a team of {team.challenge.name} meanwhile") from None
    admin.audit(session, user.id, "team.join", f"team:{team.id}")


def leave_team(session: Session, user: User, team_id: int) -> None:
    """Remove ``user`` from the team; its submissions stay the team's."""
    done = session.execute(delete(Membership).where(Membership.team_id == team_id, Membership.user_id == user.id))
    if done.rowcount != 1:
        raise NotFound("you are not a member of this team")
    admin.audit(session, user.id, "team.leave", f"team:{team_id}")
