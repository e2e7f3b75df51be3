"""The lifecycle of an evaluation: the one function every state change goes through.

    received -> validating -> queued -> running -> succeeded | failed | cancelled
                                  ^---------'  (requeued: worker lost or platform error)

Any non-terminal state may also go to ``failed`` or ``cancelled``. A change is a
conditional UPDATE on the current state (and, for a running evaluation, on the worker
holding it), so of two processes racing for the same change exactly one wins; the loser
gets IllegalTransition and must leave the row alone. Each change is timestamped in
``status_changes`` and mirrored on the submission when it is that submission's latest
evaluation, except that a submission with a successful evaluation stays ``succeeded``
while a re-evaluation of it is pending or after one fails: a re-evaluation replaces a
result only by succeeding.
"""
from __future__ import annotations

import datetime as dt
import functools

from sqlalchemy import Row, and_, bindparam, case, exists, insert, select, update
from sqlalchemy.orm import Session

from iugc.submissions.exceptions import IllegalTransition
from iugc.submissions.models import TERMINAL, Evaluation, State, StatusChange, Submission, utcnow

# Core tables, not ORM entities: a transition is on the hot path of every evaluation
_EV, _SUB, _CHANGES = Evaluation.__table__, Submission.__table__, StatusChange.__table__

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
    iugc.submissions.exceptions.IllegalTransition: an evaluation cannot go from succeeded to running
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
    attempts_delta: int = 0,
    submission_values: dict | None = None,
    **values,
) -> Row:
    """Move one evaluation from ``current`` to ``target``, setting ``values`` on it (plain
    values; ``attempts_delta`` is added to its attempts) and ``submission_values`` on its
    submission; returns its ``submission_id``, ``team_id`` and ``phase_id``.

    ``held_by``: a worker id; the change happens only while that worker holds the row.
    Raises IllegalTransition for a change the machine forbids or when the row is no longer
    in ``current`` (another process changed it first). Runs inside the caller's
    transaction; nothing is written if the caller rolls back. Three statements, built once
    per shape: the conditional UPDATE (RETURNING), the history row, the submission's UPDATE.
    """
    check_transition(current, target)
    at = at or utcnow()
    stamps = {State.queued: "queued_at", State.running: "started_at"}
    if target in stamps:
        values.setdefault(stamps[target], at)
    if target in TERMINAL:
        values.setdefault("finished_at", at)
    submission_values = submission_values or {}
    change, mirror = _statements(held_by is not None, tuple(sorted(values)), tuple(sorted(submission_values)), attempts_delta != 0)
    params = {"e_id": evaluation_id, "e_current": current, "e_target": target, "e_held": held_by, "e_delta": attempts_delta,
              **{f"v_{k}": v for k, v in values.items()}}
    changed = session.execute(change, params).first()
    if changed is None:
        now = session.execute(select(_EV.c.status, _EV.c.worker_id).where(_EV.c.id == evaluation_id)).first()
        if now is None:
            raise IllegalTransition(f"evaluation {evaluation_id} does not exist")
        held = ", held by another worker" if held_by is not None and now.worker_id != held_by else ""
        raise IllegalTransition(f"evaluation {evaluation_id} is {now.status.value}{held}, not {current.value}: it was changed meanwhile")
    session.execute(_HISTORY, {"evaluation_id": evaluation_id, "from_state": current, "to_state": target, "at": at,
                               "actor_id": actor_id, "note": note})
    return session.execute(mirror, {"s_id": changed.submission_id, "s_number": changed.number, "s_target": target,
                                    **{f"s_{k}": v for k, v in submission_values.items()}}).one()


_HISTORY = insert(_CHANGES)


@functools.lru_cache(maxsize=128)
def _statements(held: bool, keys: tuple[str, ...], submission_keys: tuple[str, ...], attempts: bool):
    """The UPDATE of an evaluation and of its submission for one shape of ``transition``
    (prebuilt with bind parameters, so SQLAlchemy's compiled cache serves every call)."""
    condition = [_EV.c.id == bindparam("e_id"), _EV.c.status == bindparam("e_current")]
    if held:
        condition.append(_EV.c.worker_id == bindparam("e_held"))
    values = {k: bindparam(f"v_{k}", type_=_EV.c[k].type) for k in keys}
    if attempts:
        values["attempts"] = _EV.c.attempts + bindparam("e_delta")
    change = (update(_EV).where(*condition).values(status=bindparam("e_target", type_=_EV.c.status.type), **values)
              .returning(_EV.c.submission_id, _EV.c.number))
    submission_id = bindparam("s_id")
    target = bindparam("s_target", type_=_SUB.c.status.type)
    later = exists().where(_EV.c.submission_id == submission_id, _EV.c.number > bindparam("s_number"))
    # the status follows the latest evaluation, but a scored submission stays succeeded until a re-evaluation succeeds
    standing = and_(_SUB.c.result_evaluation_id.is_not(None), target != State.succeeded)
    mirror = (update(_SUB).where(_SUB.c.id == submission_id)
              .values(status=case((later, _SUB.c.status), (standing, _SUB.c.status), else_=target),
                      **{k: bindparam(f"s_{k}", type_=_SUB.c[k].type) for k in submission_keys})
              .returning(_SUB.c.id.label("submission_id"), _SUB.c.team_id, _SUB.c.phase_id))
    return change, mirror
