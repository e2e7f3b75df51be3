"""Accepting a submission: phase window, team, size, the intake rules, duplicates and
quotas, then the records and the stored archive, or nothing at all.

The archive is streamed to a staging file (never held in memory) and checked by
``iugc.sandbox.intake.check_archive`` before anything is kept. The quota check and the
insert happen in one transaction holding the team's row lock (``SELECT ... FOR UPDATE``
on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), so concurrent uploads
from one team cannot both take the last slot.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from iugc.sandbox.exceptions import SubmissionError
from iugc.sandbox.intake import check_archive
from iugc.submissions import audit, capacity, challenges, teams
from iugc.submissions.db import transaction
from iugc.submissions.exceptions import Conflict, Forbidden, InvalidArchive, QuotaExceeded, Unavailable
from iugc.submissions.lifecycle import transition
from iugc.submissions.models import Evaluation, Phase, State, StatusChange, Submission, Team, User, utcnow
from iugc.submissions.storage import stage

DAY = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Quota:
    """What a team has left in a phase; ``frees_at``: when the next daily slot frees up."""

    per_day: int
    used_today: int
    total: int | None
    used_total: int
    frees_at: dt.datetime | None

    @property
    def left_today(self) -> int:
        return max(0, self.per_day - self.used_today)

    @property
    def left_total(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.used_total)

    def as_dict(self) -> dict:
        return {"per_day": self.per_day, "left_today": self.left_today, "total": self.total,
                "left_total": self.left_total, "frees_at": self.frees_at.isoformat() if self.frees_at else None}


def quota(session: Session, team_id: int, phase: Phase, now: dt.datetime | None = None) -> Quota:
    """Submissions that count against the team's quota: in the last 24 hours and in total."""
    now = now or utcnow()
    counted = (Submission.team_id == team_id, Submission.phase_id == phase.id, Submission.counts_against_quota.is_(True))
    recent = session.execute(
        select(Submission.created_at).where(*counted, Submission.created_at > now - DAY).order_by(Submission.created_at)
    ).scalars().all()
    total = session.execute(select(func.count()).select_from(Submission).where(*counted)).scalar()
    frees_at = recent[0] + DAY if len(recent) >= phase.submissions_per_day else None
    return Quota(phase.submissions_per_day, len(recent), phase.submissions_total, total, frees_at)


def check_open(phase: Phase, now: dt.datetime) -> None:
    if phase.opens_at and now < phase.opens_at:
        raise Forbidden(f"phase {phase.slug} opens at {phase.opens_at.isoformat()}")
    if phase.closes_at and now >= phase.closes_at:
        raise Forbidden(f"phase {phase.slug} closed at {phase.closes_at.isoformat()}")


def _check_quota(q: Quota, slug: str) -> None:
    if q.left_total == 0:
        raise QuotaExceeded(f"your team has used all {q.total} submissions of phase {slug}")
    if q.left_today == 0:
        raise QuotaExceeded(
            f"your team has used its {q.per_day} submissions of the last 24 hours in phase {slug}; "
            f"the next one frees up at {q.frees_at.isoformat()}", retry_after=q.frees_at)


def _team(session: Session, user: User, phase: Phase) -> Team:
    team = teams.team_of(session, user, phase.challenge_id)
    if team is None:
        raise Forbidden(f"you are in no team of {phase.challenge.name}: create one first (POST /api/v1/teams)")
    if team.disqualified_at is not None:
        raise Forbidden(f"your team {team.name} is disqualified ({team.disqualified_reason}) and may not submit; write to the organizers")
    if team.terms_accepted_at is None and teams.terms_of(phase.challenge) is not None:
        raise Forbidden(f"your team {team.name} has not accepted the terms of {phase.challenge.name} yet: a member reads and "
                        f"accepts them once on the site, at /challenges/{phase.challenge.name}/terms (or POST /api/v1/challenges/{phase.challenge.name}/terms)")
    return team


def _check_runnable(session: Session, phase: Phase) -> None:
    """Refuse an upload that no running worker could evaluate (``capacity``)."""
    reason = capacity.cannot_run(phase, capacity.live(session))
    if reason is not None:
        raise Unavailable(reason)


def why_not(session: Session, user: User, phase: Phase, now: dt.datetime) -> str | None:
    """Why ``user`` may not upload to ``phase`` now (closed, no team, a disqualified team,
    no running worker can evaluate it), or None: what the upload page says before a file
    is chosen (the quota is shown apart)."""
    try:
        check_open(phase, now)
        _team(session, user, phase)
        _check_runnable(session, phase)
    except (Forbidden, Unavailable) as exc:
        return str(exc)
    return None


def submit(sessions: sessionmaker[Session], storage, user_id: int, slug: str, stream: BinaryIO, *, now: dt.datetime | None = None) -> int:
    """Accept an uploaded ``docker save`` archive for a phase; returns the submission id.

    Raises (with nothing written to the database or storage): NotFound (no such phase),
    Forbidden (closed, not in a team), Unavailable (no running worker can evaluate the
    phase), TooLarge, InvalidRequest (the intake rules), Conflict (the same archive
    again), QuotaExceeded.
    """
    received_at = now or utcnow()
    with sessions() as session:  # cheap checks first: a refused upload is not streamed
        user = session.get(User, user_id)
        phase = challenges.phase_by_slug(session, slug)
        check_open(phase, received_at)
        team_id = _team(session, user, phase).id
        _check_quota(quota(session, team_id, phase, received_at), slug)
        _check_runnable(session, phase)
        max_bytes = int(phase.limits["image_size_limit_mb"] * 2**20)
    staged = stage(stream, storage.staging, max_bytes)
    created = False
    try:
        validating_at = now or utcnow()
        try:
            check_archive(staged.path, max_bytes=max_bytes)
        except SubmissionError as exc:
            raise InvalidArchive(str(exc)) from None
        with transaction(sessions) as session:
            session.execute(select(Team.id).where(Team.id == team_id).with_for_update()).one()
            phase = challenges.phase_by_slug(session, slug)
            check_open(phase, now or utcnow())
            duplicate = session.execute(select(Submission.id).where(
                Submission.team_id == team_id, Submission.phase_id == phase.id, Submission.archive_sha256 == staged.sha256)).scalar()
            if duplicate is not None:
                raise Conflict(f"this archive was already submitted to {slug} as submission {duplicate}")
            _check_quota(quota(session, team_id, phase, now or utcnow()), slug)
            submission = Submission(team_id=team_id, phase_id=phase.id, uploader_id=user_id, archive_sha256=staged.sha256,
                                    archive_size=staged.size, status=State.received, created_at=received_at)
            session.add(submission)
            session.flush()
            evaluation = Evaluation(submission_id=submission.id, team_id=team_id, number=1, status=State.received,
                                    limits=phase.limits, created_at=received_at)
            session.add(evaluation)
            session.flush()
            session.add(StatusChange(evaluation_id=evaluation.id, from_state=None, to_state=State.received, at=received_at, actor_id=user_id))
            transition(session, evaluation.id, State.received, State.validating, at=validating_at, actor_id=user_id)
            transition(session, evaluation.id, State.validating, State.queued, actor_id=user_id)
            audit.audit(session, user_id, "submission.create", f"submission:{submission.id}", size=staged.size, sha256=staged.sha256)
            sha256 = staged.sha256
            created = storage.commit(staged)  # last: a failed check above keeps nothing
        return submission.id
    except BaseException:
        staged.discard()
        if created:  # the transaction failed after the archive was kept
            storage.delete(sha256)
        raise
