"""Disqualifying a team or one submission, with a reason, and reinstating it (organizers).

A disqualified submission no longer counts: its team's leaderboard entry moves to the
team's best remaining submission of the phase (or the team leaves that leaderboard). A
disqualified team leaves every leaderboard of its challenge and may not submit. The
records are kept (nothing is deleted); the team sees the reason; every change writes an
audit entry; reinstating restores the entries from the records. This is what a real
challenge does: a disqualified entry is taken off the ranking, and the places below it
move up (the API, the page and the CSV/JSON export all read the same entries).

Each function runs inside the caller's transaction and raises a ``iugc.submissions.exceptions``
error, with nothing changed, for bad input.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iugc.submissions import audit
from iugc.submissions.exceptions import Conflict, InvalidRequest, NotFound
from iugc.submissions.models import Submission, Team, utcnow
from iugc.submissions.queue import refresh_entry

MIN_REASON, MAX_REASON = 3, 500


def clean_reason(reason: str | None) -> str:
    """The reason, stripped; InvalidRequest unless it is 3 to 500 printable characters.

    >>> clean_reason("  copied another team's masks ")
    "copied another team's masks"
    >>> clean_reason("")
    Traceback (most recent call last):
    ...
    iugc.submissions.exceptions.InvalidRequest: give a reason of 3 to 500 characters (the team will see it), got 0
    """
    text = " ".join((reason or "").split())
    if not MIN_REASON <= len(text) <= MAX_REASON or not text.isprintable():
        raise InvalidRequest(f"give a reason of {MIN_REASON} to {MAX_REASON} characters (the team will see it), got {len(text)}")
    return text


def _team(session: Session, team_id: int) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team {team_id}")
    return team


def _submission(session: Session, submission_id: int) -> Submission:
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFound(f"no submission {submission_id}")
    return submission


def _refresh_team(session: Session, team: Team) -> None:
    phase_ids = session.execute(select(Submission.phase_id).where(Submission.team_id == team.id).distinct()).scalars().all()
    for phase_id in phase_ids:
        refresh_entry(session, phase_id, team.id)


def _set(session: Session, row: Team | Submission, label: str, reason: str | None, actor_id: int | None, refresh) -> None:
    """Disqualify ``row`` with ``reason`` (a clean one), or reinstate it (``reason`` None);
    then ``refresh()`` the leaderboard entries and write the audit entry."""
    kind = "team" if isinstance(row, Team) else "submission"
    if reason is not None:
        if row.disqualified_at is not None:
            raise Conflict(f"{label} is already disqualified ({row.disqualified_reason}); reinstate it first to change the reason")
        row.disqualified_at, row.disqualified_reason = utcnow(), reason
        action, detail = "disqualify", {"reason": reason}
    else:
        if row.disqualified_at is None:
            raise Conflict(f"{label} is not disqualified")
        action, detail = "reinstate", {"was": row.disqualified_reason}
        row.disqualified_at = row.disqualified_reason = None
    session.flush()
    refresh()
    audit.audit(session, actor_id, f"{kind}.{action}", f"{kind}:{row.id}", **detail)


def disqualify_team(session: Session, team_id: int, reason: str, actor_id: int | None = None) -> Team:
    """Take a team off every leaderboard of its challenge and stop its uploads."""
    reason = clean_reason(reason)
    team = _team(session, team_id)
    _set(session, team, f"team {team.name}", reason, actor_id, lambda: _refresh_team(session, team))
    return team


def reinstate_team(session: Session, team_id: int, actor_id: int | None = None) -> Team:
    """Undo :func:`disqualify_team`: the team's best submissions rank again."""
    team = _team(session, team_id)
    _set(session, team, f"team {team.name}", None, actor_id, lambda: _refresh_team(session, team))
    return team


def disqualify_submission(session: Session, submission_id: int, reason: str, actor_id: int | None = None) -> Submission:
    """Stop one submission counting; its team's next best submission takes its place."""
    reason = clean_reason(reason)
    submission = _submission(session, submission_id)
    _set(session, submission, f"submission {submission_id}", reason, actor_id,
         lambda: refresh_entry(session, submission.phase_id, submission.team_id))
    return submission


def reinstate_submission(session: Session, submission_id: int, actor_id: int | None = None) -> Submission:
    """Undo :func:`disqualify_submission`."""
    submission = _submission(session, submission_id)
    _set(session, submission, f"submission {submission_id}", None, actor_id,
         lambda: refresh_entry(session, submission.phase_id, submission.team_id))
    return submission
