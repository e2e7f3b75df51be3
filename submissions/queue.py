"""The queue is the ``evaluations`` table: claiming, heartbeats, results, the reaper,
cancellation and re-evaluation. The same functions serve the embedded worker threads and
the Celery workers; the database row is the truth in both modes.

- A worker *claims* a queued evaluation by a conditional UPDATE (queued -> running with
  its ``worker_id``); the partial unique index keeps one running evaluation per team.
- While it runs, the worker *heartbeats* the rows it holds.
- Its result is written only while it still holds the row (running, its ``worker_id``):
  an evaluation that was reaped, cancelled or claimed by another worker meanwhile is not
  written twice. Per-case rows are unique per evaluation, as a second guard.
- The *reaper* requeues a running evaluation whose heartbeat is older than the timeout,
  or whose worker process on this host is gone, up to ``max_attempts``; after that it
  fails it as ``worker_lost`` (a platform failure: it does not count against the team).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from submissions import admin, reports
from submissions.db import transaction
from submissions.exceptions import IllegalTransition, InvalidRequest, NotFound
from submissions.lifecycle import PLATFORM_REASONS, transition
from submissions.models import TERMINAL, CaseResult, Challenge, Dataset, Evaluation, LeaderboardEntry, Phase, Role, State, StatusChange, Submission, User, utcnow

HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3


def new_worker_id() -> str:
    """``host:pid:random``: the host and process that hold an evaluation, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_gone(worker_id: str) -> bool:
    """Whether the process named by ``worker_id`` is known to be dead (on this host only)."""
    host, pid, _ = (worker_id.split(":") + ["", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Job:
    """What a worker needs to run one evaluation, as plain values, and ``cancel``: set by
    the worker when the row stops being its own (cancelled, reaped) or when it shuts down;
    ``evaluate_image`` then stops the container."""

    evaluation_id: int
    worker_id: str
    archive_sha256: str
    image_digest: str | None
    challenge: dict
    phase_name: str
    limits: dict
    dataset_path: str | None
    manifest_sha256: str | None
    cancel: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


def _take(session: Session, evaluation_id: int, worker_id: str) -> Job:
    """queued -> running for ``worker_id`` (IllegalTransition/IntegrityError when it cannot)."""
    now = utcnow()
    transition(session, evaluation_id, State.queued, State.running, note=f"claimed by {worker_id}",
               at=now, worker_id=worker_id, worker_host=worker_id.split(":")[0],
               heartbeat_at=now, attempts=Evaluation.attempts + 1)
    return _job(session, evaluation_id, worker_id)


def claim_next(sessions: sessionmaker[Session], worker_id: str) -> Job | None:
    """Take the oldest queued evaluation of a team with none running; None when none is."""
    with transaction(sessions) as session:
        running = select(Evaluation.team_id).where(Evaluation.status == State.running)
        query = (select(Evaluation.id).where(Evaluation.status == State.queued, Evaluation.team_id.not_in(running))
                 .order_by(Evaluation.id).limit(16))
        if session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for evaluation_id in session.execute(query).scalars().all():
            try:
                with session.begin_nested():
                    return _take(session, evaluation_id, worker_id)
            except (IllegalTransition, IntegrityError):
                continue  # another worker took it, or this team got a running one meanwhile
    return None


def claim(sessions: sessionmaker[Session], worker_id: str, evaluation_id: int) -> Job | None:
    """Take one named evaluation if it is still queued and its team has none running."""
    try:
        with transaction(sessions) as session:
            return _take(session, evaluation_id, worker_id)
    except (IllegalTransition, IntegrityError):
        return None  # taken, cancelled or finished meanwhile, or the team has one running


def queued_ids(sessions: sessionmaker[Session], limit: int = 10_000) -> list[int]:
    """Queued evaluations, oldest first, skipping teams that have one running."""
    with sessions() as session:
        running = select(Evaluation.team_id).where(Evaluation.status == State.running)
        return list(session.execute(select(Evaluation.id).where(
            Evaluation.status == State.queued, Evaluation.team_id.not_in(running)).order_by(Evaluation.id).limit(limit)).scalars())


def _job(session: Session, evaluation_id: int, worker_id: str) -> Job:
    """The job of a just-claimed evaluation; records the dataset and definition it runs on
    (a re-evaluation keeps the dataset of its own time only if it was given one)."""
    row = session.execute(
        select(Evaluation.dataset_id, Evaluation.limits, Submission.archive_sha256, Submission.image_digest,
               Submission.phase_id, Phase.name, Phase.limits.label("phase_limits"), Challenge.definition, Challenge.definition_sha256)
        .join(Submission, Submission.id == Evaluation.submission_id).join(Phase, Phase.id == Submission.phase_id)
        .join(Challenge, Challenge.id == Phase.challenge_id).where(Evaluation.id == evaluation_id)
    ).one()
    query = select(Dataset.id, Dataset.path, Dataset.manifest_sha256)
    if row.dataset_id is None:
        query = query.where(Dataset.phase_id == row.phase_id, Dataset.active.is_(True)).order_by(Dataset.id.desc()).limit(1)
    else:
        query = query.where(Dataset.id == row.dataset_id)
    dataset = session.execute(query).first()
    session.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(
        dataset_id=dataset.id if dataset else None, manifest_sha256=dataset.manifest_sha256 if dataset else None,
        definition_sha256=row.definition_sha256))
    return Job(evaluation_id, worker_id, row.archive_sha256, row.image_digest, row.definition, row.name,
               row.limits or row.phase_limits, dataset.path if dataset else None, dataset.manifest_sha256 if dataset else None)


def heartbeat(sessions: sessionmaker[Session], worker_id: str, evaluation_ids: list[int]) -> set[int]:
    """Refresh the heartbeat of the rows this worker holds; returns the ids it still holds."""
    if not evaluation_ids:
        return set()
    held = (Evaluation.id.in_(evaluation_ids), Evaluation.worker_id == worker_id, Evaluation.status == State.running)
    with transaction(sessions) as session:
        session.execute(update(Evaluation).where(*held).values(heartbeat_at=utcnow()))
        return set(session.execute(select(Evaluation.id).where(*held)).scalars())


def still_held(sessions: sessionmaker[Session], worker_id: str, evaluation_ids: list[int]) -> set[int]:
    """Which of ``evaluation_ids`` this worker still holds (running, its id); read only."""
    if not evaluation_ids:
        return set()
    with sessions() as session:
        return set(session.execute(select(Evaluation.id).where(
            Evaluation.id.in_(evaluation_ids), Evaluation.worker_id == worker_id, Evaluation.status == State.running)).scalars())


def _counts(session: Session, evaluation_id: int, failure: str | None, platform: bool) -> None:
    """Whether the submission uses up quota after this failure (platform faults never do)."""
    submission_id = session.execute(select(Evaluation.submission_id).where(Evaluation.id == evaluation_id)).scalar()
    submission = session.get(Submission, submission_id)
    if platform or not session.get(Phase, submission.phase_id).failures_count:
        submission.counts_against_quota = False


def finish(sessions: sessionmaker[Session], job: Job, result: dict, storage=None, evaluator_version: str | None = None) -> bool:
    """Store an ``evaluate_image`` result for a held evaluation, once.

    Returns False (and writes nothing) when the worker no longer holds it (reaped,
    cancelled, or taken by another worker meanwhile).
    """
    succeeded = result.get("status") == "succeeded"
    document = json.dumps(result, sort_keys=True, allow_nan=False).encode()
    result_key = storage.put_bytes(document) if storage is not None else None
    try:
        with transaction(sessions) as session:
            values = dict(
                image_digest=result.get("image_digest"), log_tail=result.get("logs"), result_key=result_key,
                evaluator_version=evaluator_version or result.get("evaluator_version"),
            )
            if succeeded:
                values.update(aggregates=result.get("aggregates"), score=result.get("score"), error=result.get("error"))
                transition(session, job.evaluation_id, State.running, State.succeeded, held_by=job.worker_id, **values)
                session.add_all(CaseResult(evaluation_id=job.evaluation_id, case_id=case_id, values=case, error=case.get("error"))
                                for case_id, case in (result.get("cases") or {}).items())
            else:
                values.update(failure=result.get("failure"), error=result.get("error"))
                transition(session, job.evaluation_id, State.running, State.failed, held_by=job.worker_id, **values)
                _counts(session, job.evaluation_id, result.get("failure"), platform=False)
            mirrored = {"image_digest": result["image_digest"]} if result.get("image_digest") else {}
            if succeeded:
                mirrored.update(result_evaluation_id=job.evaluation_id, score=result.get("score"))
            if mirrored:
                session.execute(update(Submission).where(Submission.id == select(Evaluation.submission_id).where(
                    Evaluation.id == job.evaluation_id).scalar_subquery()).values(**mirrored))
            if succeeded:
                phase_id, team_id = session.execute(select(Submission.phase_id, Submission.team_id).join(
                    Evaluation, Evaluation.submission_id == Submission.id).where(Evaluation.id == job.evaluation_id)).one()
                refresh_entry(session, phase_id, team_id)
        return True
    except IllegalTransition:
        return False


def refresh_entry(session: Session, phase_id: int, team_id: int) -> None:
    """Point the team's leaderboard entry at its best-scoring submission (ties: the later)."""
    best = session.execute(select(Submission.id, Submission.result_evaluation_id, Submission.score).where(
        Submission.phase_id == phase_id, Submission.team_id == team_id, Submission.result_evaluation_id.is_not(None),
    ).order_by(Submission.score.desc().nulls_last(), Submission.id.desc()).limit(1)).first()
    entry = session.execute(select(LeaderboardEntry).where(
        LeaderboardEntry.phase_id == phase_id, LeaderboardEntry.team_id == team_id)).scalar_one_or_none()
    if best is None:
        if entry is not None:
            session.delete(entry)
        return
    if entry is None:
        entry = LeaderboardEntry(phase_id=phase_id, team_id=team_id)
        session.add(entry)
    entry.submission_id, entry.evaluation_id, entry.score = best.id, best.result_evaluation_id, best.score
    session.flush()


def release(sessions: sessionmaker[Session], job: Job, reason: str, note: str, max_attempts: int = MAX_ATTEMPTS,
            *, interrupted: bool = False) -> State | None:
    """Give back a held evaluation after a platform fault: requeued while attempts remain,
    else failed with ``reason`` (a platform failure). ``interrupted``: the worker stopped it
    on purpose (shutdown): always requeued, and this attempt is not counted. Returns the
    new state (None: not held)."""
    if reason not in PLATFORM_REASONS:
        raise ValueError(f"reason must be one of {PLATFORM_REASONS}, got {reason!r}")
    try:
        with transaction(sessions) as session:
            return _release(session, job.evaluation_id, job.worker_id, reason, note, max_attempts, interrupted)
    except IllegalTransition:
        return None


def _release(session: Session, evaluation_id: int, worker_id: str, reason: str, note: str, max_attempts: int,
             interrupted: bool = False) -> State:
    attempts = session.execute(select(Evaluation.attempts).where(Evaluation.id == evaluation_id)).scalar()
    if interrupted or attempts < max_attempts:
        refund = {"attempts": Evaluation.attempts - 1} if interrupted else {}
        transition(session, evaluation_id, State.running, State.queued, held_by=worker_id, note=note,
                   worker_id=None, heartbeat_at=None, **refund)
        return State.queued
    message = ("the worker running it stopped answering" if reason == "worker_lost" else "the platform could not run it") + \
        f" {attempts} times; it does not count against your quota"
    transition(session, evaluation_id, State.running, State.failed, held_by=worker_id, note=note,
               failure=reason, error=message, platform_fault=True)
    _counts(session, evaluation_id, reason, platform=True)
    return State.failed


def reap(sessions: sessionmaker[Session], timeout_seconds: float = HEARTBEAT_TIMEOUT_SECONDS, max_attempts: int = MAX_ATTEMPTS,
         now: dt.datetime | None = None) -> dict[int, State]:
    """Requeue (or fail as worker_lost) running evaluations whose worker stopped answering:
    a heartbeat older than the timeout, or a worker process on this host that is gone."""
    now = now or utcnow()
    with sessions() as session:
        rows = session.execute(select(Evaluation.id, Evaluation.worker_id, Evaluation.heartbeat_at).where(
            Evaluation.status == State.running)).all()
    lost = [(i, w) for i, w, beat in rows
            if beat is None or (now - beat).total_seconds() > timeout_seconds or worker_gone(w or "")]
    changed = {}
    for evaluation_id, worker_id in lost:
        try:
            with transaction(sessions) as session:
                changed[evaluation_id] = _release(session, evaluation_id, worker_id, "worker_lost",
                                                  f"worker {worker_id} lost", max_attempts)
        except IllegalTransition:
            continue  # it finished or was reaped meanwhile
    return changed


def cancel(sessions: sessionmaker[Session], user_id: int, submission_id: int) -> State:
    """Cancel a submission's latest evaluation while it is received, queued or running."""
    with transaction(sessions) as session:
        user = session.get(User, user_id)
        submission = reports.visible_submission(session, user, submission_id)
        latest = submission.evaluations[-1]
        if latest.status in TERMINAL:
            raise InvalidRequest(f"submission {submission_id} is already {latest.status.value}; nothing to cancel")
        transition(session, latest.id, latest.status, State.cancelled, actor_id=user_id,
                   note="cancelled by an organizer" if user.role == Role.organizer else "cancelled by the team")
        if user.role == Role.organizer:
            submission.counts_against_quota = False
        admin.audit(session, user_id, "submission.cancel", f"submission:{submission_id}")
        return State.cancelled


def reevaluate(sessions: sessionmaker[Session], actor_id: int | None, slug: str, submission_id: int | None = None) -> list[int]:
    """Queue a new evaluation of one submission or of every submission of a phase; the old
    evaluations are kept. Submissions with an evaluation still pending are skipped."""
    with transaction(sessions) as session:
        phase = admin.phase_by_slug(session, slug)
        query = select(Submission).where(Submission.phase_id == phase.id).order_by(Submission.id)
        if submission_id is not None:
            query = query.where(Submission.id == submission_id)
        submissions = session.execute(query).scalars().all()
        if submission_id is not None and not submissions:
            raise NotFound(f"no submission {submission_id} in phase {slug}")
        created = []
        for submission in submissions:
            if any(e.status not in TERMINAL for e in submission.evaluations):
                continue
            number = max(e.number for e in submission.evaluations) + 1
            evaluation = Evaluation(submission_id=submission.id, team_id=submission.team_id, number=number,
                                    status=State.validating, limits=phase.limits)
            session.add(evaluation)
            session.flush()
            session.add(StatusChange(evaluation_id=evaluation.id, from_state=None, to_state=State.validating, actor_id=actor_id,
                                     note="re-evaluation"))
            transition(session, evaluation.id, State.validating, State.queued, actor_id=actor_id)
            created.append(evaluation.id)
        admin.audit(session, actor_id, "phase.reevaluate", f"phase:{slug}", evaluations=created)
        return created

