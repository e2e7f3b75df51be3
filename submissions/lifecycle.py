"""The lifecycle of an evaluation: the one function every state change goes through.

    received -> validating -> queued -> running -> succeeded | failed | cancelled
                                  ^---------'  (requeued: worker lost or platform error)

Any non-terminal state may also go to ``failed`` or ``cancelled``. A change is a
conditional UPDATE on the current state (and, for a running evaluation, on the worker
holding it), so of two processes racing for the same change exactly one wins; the loser
gets IllegalTransition and must leave the row alone. Each change is timestamped in
``status_changes`` and mirrored on the submission when it is that submission's latest
evaluation.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, insert, select, update
from sqlalchemy.orm import Session

from submissions.exceptions import IllegalTransition
from submissions.models import TERMINAL, Evaluation, State, StatusChange, Submission, utcnow

ALLOWED: dict[State, frozenset[State]] = {
    State.received: frozenset({State.validating, State.failed, State.cancelled}),
    State.validating: frozenset({State.queued, State.failed, State.cancelled}),
    State.queued: frozenset({State.running, State.failed, State.cancelled}),
    State.running: frozenset({State.succeeded, State.failed, State.cancelled, State.queued}),
    State.succeeded: frozenset(),
    State.failed: frozenset(),
    State.cancelled: frozenset(),
}

PLATFORM_REASONS = ("worker_lost", "platform_error")
"""Failures caused by the platform: they never count against a team's quota."""


def check_transition(current: State, target: State) -> None:
    """Raise IllegalTransition unless ``current -> target`` is allowed.

    >>> check_transition(State.queued, State.running)
    >>> check_transition(State.succeeded, State.running)
    Traceback (most recent call last):
    ...
    submissions.exceptions.IllegalTransition: an evaluation cannot go from succeeded to running
    """
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"an evaluation cannot go from {current.value} to {target.value}")


def transition(
    session: Session,
    evaluation_id: int,
    current: State,
    target: State,
    *,
    held_by: str | None = None,
    actor_id: int | None = None,
    note: str | None = None,
    at: dt.datetime | None = None,
    **values,
) -> None:
    """Move one evaluation from ``current`` to ``target`` (and set ``values`` on it).

    ``held_by``: a worker id; the change happens only while that worker holds the row.
    Raises IllegalTransition for a change the machine forbids or when the row is no longer
    in ``current`` (another process changed it first). Runs inside the caller's
    transaction; nothing is written if the caller rolls back.
    """
    check_transition(current, target)
    at = at or utcnow()
    stamps = {State.queued: "queued_at", State.running: "started_at"}
    if target in stamps:
        values.setdefault(stamps[target], at)
    if target in TERMINAL:
        values.setdefault("finished_at", at)
    condition = [Evaluation.id == evaluation_id, Evaluation.status == current]
    if held_by is not None:
        condition.append(Evaluation.worker_id == held_by)
    done = session.execute(update(Evaluation).where(*condition).values(status=target, **values))
    if done.rowcount != 1:
        now = session.execute(select(Evaluation.status, Evaluation.worker_id).where(Evaluation.id == evaluation_id)).first()
        if now is None:
            raise IllegalTransition(f"evaluation {evaluation_id} does not exist")
        held = ", held by another worker" if held_by is not None and now.worker_id != held_by else ""
        raise IllegalTransition(f"evaluation {evaluation_id} is {now.status.value}{held}, not {current.value}: it was changed meanwhile")
    session.execute(insert(StatusChange).values(evaluation_id=evaluation_id, from_state=current, to_state=target, at=at,
                                                actor_id=actor_id, note=note))
    _mirror_on_submission(session, evaluation_id, target)


def _mirror_on_submission(session: Session, evaluation_id: int, target: State) -> None:
    """The submission's status follows its latest evaluation."""
    submission_id, number = session.execute(
        select(Evaluation.submission_id, Evaluation.number).where(Evaluation.id == evaluation_id)).one()
    later = exists().where(Evaluation.submission_id == submission_id, Evaluation.number > number)
    session.execute(update(Submission).where(Submission.id == submission_id, ~later).values(status=target))
