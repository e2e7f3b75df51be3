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
import functools
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from sqlalchemy import JSON, Integer, bindparam, case, delete, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from iugc.sandbox.docker_engine import Host
from iugc.submissions import audit, capacity, challenges, reports
from iugc.submissions.db import transaction
from iugc.submissions.exceptions import IllegalTransition, InvalidRequest, NotFound
from iugc.submissions.lifecycle import PLATFORM_REASONS, transition
from iugc.submissions.models import TERMINAL, CaseResult, Challenge, Dataset, Evaluation, LeaderboardEntry, Phase, Role, State, StatusChange, Submission, Team, User, utcnow

HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TIMEOUT_SECONDS = capacity.LIVE_SECONDS
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


_EV, _SUB, _DS, _PHASE, _CHALLENGE = (m.__table__ for m in (Evaluation, Submission, Dataset, Phase, Challenge))
_ACTIVE = _DS.alias("active")
_ACTIVE_DATASET = (select(_ACTIVE.c.id).where(_ACTIVE.c.phase_id == _SUB.c.phase_id, _ACTIVE.c.active.is_(True))
                   .order_by(_ACTIVE.c.id.desc()).limit(1).correlate(_SUB).scalar_subquery())
_JOB = (  # an evaluation with all its job needs: the dataset it names, else the phase's active one
    select(_EV.c.id, _EV.c.limits, _SUB.c.archive_sha256, _SUB.c.image_digest, _PHASE.c.name, _PHASE.c.limits.label("phase_limits"),
           _CHALLENGE.c.definition, _CHALLENGE.c.definition_sha256, _DS.c.id.label("dataset_id"), _DS.c.path, _DS.c.manifest_sha256)
    .select_from(_EV).join(_SUB, _SUB.c.id == _EV.c.submission_id).join(_PHASE, _PHASE.c.id == _SUB.c.phase_id)
    .join(_CHALLENGE, _CHALLENGE.c.id == _PHASE.c.challenge_id)
    .outerjoin(_DS, _DS.c.id == func.coalesce(_EV.c.dataset_id, _ACTIVE_DATASET))
)
_LIMITS = func.coalesce(_EV.c.limits, _PHASE.c.limits, type_=JSON)  # what the evaluation asks of a worker
_NEXT = (_JOB.where(_EV.c.status == State.queued, _EV.c.team_id.not_in(select(_EV.c.team_id).where(_EV.c.status == State.running)))
         .order_by(_EV.c.id).limit(1))  # the oldest queued evaluation of a team with none running
_NEXT_LOCKED = _NEXT.with_for_update(skip_locked=True, of=_EV)  # PostgreSQL: skip what another worker is claiming
_NAMED = _JOB.where(_EV.c.id == bindparam("evaluation_id"))
_CLAIM_TRIES = 4


def _take(session: Session, query, worker_id: str, params: dict | None = None) -> Job | None:
    """queued -> running for ``worker_id`` of the evaluation ``query`` (a ``_JOB`` select)
    finds, recording the dataset and definition it runs on; None when it finds none.
    IllegalTransition/IntegrityError when another worker or the team's running one won."""
    row = session.execute(query, params).first()
    if row is None:
        return None
    now = utcnow()
    transition(session, row.id, State.queued, State.running, note=f"claimed by {worker_id}",
               at=now, worker_id=worker_id, worker_host=worker_id.split(":")[0], heartbeat_at=now, attempts_delta=1,
               dataset_id=row.dataset_id, manifest_sha256=row.manifest_sha256, definition_sha256=row.definition_sha256)
    return Job(row.id, worker_id, row.archive_sha256, row.image_digest, row.definition, row.name,
               row.limits or row.phase_limits, row.path, row.manifest_sha256)


def claim_next(sessions: sessionmaker[Session], worker_id: str, host: Host | None = None) -> Job | None:
    """Take the oldest queued evaluation of a team with none running that ``host`` (what
    the worker gives one evaluation; None: anything) can run; None when none is.

    One transaction of a SELECT and the transition: on SQLite the write lock is held from
    its start (nothing can interleave); on PostgreSQL the row is read ``FOR UPDATE SKIP
    LOCKED`` and a race for the team's one running slot is tried again."""
    for _ in range(_CLAIM_TRIES):
        try:
            with transaction(sessions) as session:
                query = _NEXT_LOCKED if session.bind.dialect.name == "postgresql" else _NEXT
                return _take(session, query.where(*capacity.fits(_LIMITS, host)), worker_id)
        except (IllegalTransition, IntegrityError):
            continue  # another worker took it, or this team got a running one meanwhile
    return None


def claim(sessions: sessionmaker[Session], worker_id: str, evaluation_id: int, host: Host | None = None) -> Job | None:
    """Take one named evaluation if it is still queued, its team has none running and
    ``host`` can run it."""
    try:
        with transaction(sessions) as session:
            return _take(session, _NAMED.where(*capacity.fits(_LIMITS, host)), worker_id, {"evaluation_id": evaluation_id})
    except (IllegalTransition, IntegrityError):
        return None  # taken, cancelled or finished meanwhile, or the team has one running


def queued_ids(sessions: sessionmaker[Session], limit: int = 10_000) -> list[int]:
    """Queued evaluations, oldest first, skipping teams that have one running."""
    with sessions() as session:
        running = select(Evaluation.team_id).where(Evaluation.status == State.running)
        return list(session.execute(select(Evaluation.id).where(
            Evaluation.status == State.queued, Evaluation.team_id.not_in(running)).order_by(Evaluation.id).limit(limit)).scalars())


def heartbeat(sessions: sessionmaker[Session], worker_id: str, evaluation_ids: list[int]) -> set[int]:
    """Refresh the heartbeat of the rows this worker holds; returns the ids it still holds."""
    if not evaluation_ids:
        return set()
    held = _held(worker_id, evaluation_ids)
    with transaction(sessions) as session:
        session.execute(update(Evaluation).where(*held).values(heartbeat_at=utcnow()))
        return set(session.execute(select(Evaluation.id).where(*held)).scalars())


def _held(worker_id: str, evaluation_ids: list[int]) -> tuple:
    """The conditions of a row ``worker_id`` holds: one of ``evaluation_ids``, its id, running."""
    return Evaluation.id.in_(evaluation_ids), Evaluation.worker_id == worker_id, Evaluation.status == State.running


def still_held(sessions: sessionmaker[Session], worker_id: str, evaluation_ids: list[int]) -> set[int]:
    """Which of ``evaluation_ids`` this worker still holds (running, its id); read only."""
    if not evaluation_ids:
        return set()
    with sessions() as session:
        return set(session.execute(select(Evaluation.id).where(*_held(worker_id, evaluation_ids))).scalars())


def _counts(session: Session, submission_id: int, platform: bool) -> None:
    """Whether the submission uses up quota after this failure (platform faults never do;
    the team's own do where the phase says so). A submission that was scored before (this
    was a re-evaluation) keeps counting as it did: its result stands."""
    keep_counting = select(Phase.failures_count).where(Phase.id == _SUB.c.phase_id).scalar_subquery()
    condition = [_SUB.c.id == submission_id, _SUB.c.result_evaluation_id.is_(None)] + ([] if platform else [~keep_counting])
    session.execute(update(_SUB).where(*condition).values(counts_against_quota=False))


def finish(sessions: sessionmaker[Session], job: Job, result: dict, storage=None, evaluator_version: str | None = None) -> bool:
    """Store an ``evaluate_image`` result for a held evaluation, once.

    Returns False (and writes nothing) when the worker no longer holds it (reaped,
    cancelled, or taken by another worker meanwhile). A success is the transition, its
    per-case rows (one multi-row INSERT) and the team's leaderboard entry (one upsert).
    """
    succeeded = result.get("status") == "succeeded"
    document = json.dumps(result, sort_keys=True, allow_nan=False).encode()
    result_key = storage.put_bytes(document) if storage is not None else None
    values = dict(image_digest=result.get("image_digest"), log_tail=result.get("logs"), result_key=result_key,
                  evaluator_version=evaluator_version or result.get("evaluator_version"), error=result.get("error"))
    mirrored = {"image_digest": result["image_digest"]} if result.get("image_digest") else {}
    if succeeded:
        values.update(aggregates=result.get("aggregates"), score=result.get("score"))
        mirrored.update(result_evaluation_id=job.evaluation_id, score=result.get("score"))
    else:
        values.update(failure=result.get("failure"))
    try:
        with transaction(sessions) as session:
            ids = transition(session, job.evaluation_id, State.running, State.succeeded if succeeded else State.failed,
                             held_by=job.worker_id, submission_values=mirrored, **values)
            if not succeeded:
                _counts(session, ids.submission_id, platform=False)
                return True
            cases = [{"evaluation_id": job.evaluation_id, "case_id": case_id, "values": case, "error": case.get("error")}
                     for case_id, case in (result.get("cases") or {}).items()]
            if cases:
                session.execute(insert(CaseResult.__table__), cases)
            refresh_entry(session, ids.phase_id, ids.team_id)
        return True
    except IllegalTransition:
        return False


def refresh_entry(session: Session, phase_id: int, team_id: int) -> None:
    """Point the team's leaderboard entry at the scored submission it chose (``counting``),
    else, as the phase says, its best-scoring one (ties: the later) or its latest scored
    one, not disqualified: one upsert, and a delete only when the team has none left
    (a disqualified team has no entry). It moves the phase's ``board_version``: the only
    writer of the entries, so a kept leaderboard is current while that number is."""
    params = {"phase_id": phase_id, "team_id": team_id}
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... SELECT, and the delete never ran
    if session.execute(_entry_upsert(session.bind.dialect.name), params).first() is None:
        session.execute(_ENTRY_DELETE, params)
    session.execute(_BOARD_MOVED, {"phase_id": phase_id})


_ENTRIES = LeaderboardEntry.__table__
_TEAMS = Team.__table__
_PHASES = Phase.__table__
_BOARD_MOVED = (update(_PHASES).where(_PHASES.c.id == bindparam("phase_id"))
                .values(board_version=_PHASES.c.board_version + 1))
_ENTRY_DELETE = delete(_ENTRIES).where(_ENTRIES.c.phase_id == bindparam("phase_id"), _ENTRIES.c.team_id == bindparam("team_id"))


@functools.lru_cache(maxsize=4)
def _entry_upsert(dialect: str):
    """INSERT the team's best submission ... ON CONFLICT (phase, team) DO UPDATE, for SQLite or PostgreSQL."""
    phase_id, team_id = bindparam("phase_id", type_=Integer), bindparam("team_id", type_=Integer)
    last = select(_PHASES.c.counts).where(_PHASES.c.id == phase_id).scalar_subquery() == "last"  # else best
    best = (select(phase_id, team_id, _SUB.c.id, _SUB.c.result_evaluation_id, _SUB.c.score)
            .where(_SUB.c.phase_id == phase_id, _SUB.c.team_id == team_id, _SUB.c.result_evaluation_id.is_not(None),
                   _SUB.c.disqualified_at.is_(None),
                   ~exists().where(_TEAMS.c.id == team_id, _TEAMS.c.disqualified_at.is_not(None)))
            .order_by(_SUB.c.chosen_at.is_(None), case((last, _SUB.c.id), else_=None).desc().nulls_last(),
                      _SUB.c.score.desc().nulls_last(), _SUB.c.id.desc()).limit(1))
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_ENTRIES)
    upsert = upsert.from_select(["phase_id", "team_id", "submission_id", "evaluation_id", "score"], best)
    return upsert.on_conflict_do_update(index_elements=["phase_id", "team_id"], set_={
        "submission_id": upsert.excluded.submission_id, "evaluation_id": upsert.excluded.evaluation_id,
        "score": upsert.excluded.score}).returning(_ENTRIES.c.id)


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
        transition(session, evaluation_id, State.running, State.queued, held_by=worker_id, note=note,
                   worker_id=None, heartbeat_at=None, attempts_delta=-1 if interrupted else 0)
        return State.queued
    message = ("the worker running it stopped answering" if reason == "worker_lost" else "the platform could not run it") + \
        f" {attempts} times; it does not count against your quota"
    ids = transition(session, evaluation_id, State.running, State.failed, held_by=worker_id, note=note,
                     failure=reason, error=message, platform_fault=True)
    _counts(session, ids.submission_id, platform=True)
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
        if user.role == Role.organizer and submission.result_evaluation_id is None:  # a scored one's result stands
            submission.counts_against_quota = False
        audit.audit(session, user_id, "submission.cancel", f"submission:{submission_id}")
        return State.cancelled


def reevaluate(sessions: sessionmaker[Session], actor_id: int | None, slug: str, submission_id: int | None = None) -> list[int]:
    """Queue a new evaluation of one submission or of every submission of a phase; the old
    evaluations are kept. Submissions with an evaluation still pending are skipped. Until
    the new evaluation succeeds, a scored submission keeps its status, score, leaderboard
    entry and quota count (``lifecycle``); a failed one shows in its history."""
    with transaction(sessions) as session:
        phase = challenges.phase_by_slug(session, slug)
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
        audit.audit(session, actor_id, "phase.reevaluate", f"phase:{slug}", evaluations=created)
        return created

