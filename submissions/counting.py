"""Which scored submission counts on a phase's leaderboard, and what a team says about its
submissions: by default the phase's rule (``Phase.counts``: the team's best-scoring or its
latest scored submission, set by an organizer), unless the team chose one; and a short
description of the method with an optional link, shown on the leaderboard row.

Only the team's members choose and describe (an organizer disqualifies instead); a choice
or a new rule moves the leaderboard at once (``queue.refresh_entry``) and is audited.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from iugc.submissions import audit, challenges, queue, reports
from iugc.submissions.exceptions import Forbidden, InvalidRequest
from iugc.submissions.models import Role, State, Submission, User, utcnow

RULES = {"best": "its best-scoring submission", "last": "its latest scored submission"}
"""``Phase.counts``: what counts for a team that chose none, in the words the pages use."""
DESCRIPTION_CHARS = 200
URL_CHARS = 500


def _own(session: Session, user: User, submission_id: int) -> Submission:
    """The submission, if ``user`` is a member of its team (NotFound otherwise, as for any other team's)."""
    if user.role == Role.organizer:
        raise Forbidden("only the team's members choose its submissions and describe them")
    return reports.visible_submission(session, user, submission_id)  # another team's: NotFound


def choose(session: Session, user: User, submission_id: int) -> None:
    """Make this scored submission the one that counts for its team in its phase (replacing
    an earlier choice); InvalidRequest for one not scored or disqualified."""
    submission = _own(session, user, submission_id)
    if submission.result_evaluation_id is None or submission.status != State.succeeded:
        raise InvalidRequest(f"submission {submission_id} has no score yet; only a scored submission can count")
    if submission.disqualified_at is not None:
        raise InvalidRequest(f"submission {submission_id} is disqualified and cannot count")
    _count(session, user, submission, chosen=True)


def unchoose(session: Session, user: User, submission_id: int) -> None:
    """Go back to the phase's rule for the team (its best or its latest scored submission)."""
    _count(session, user, _own(session, user, submission_id), chosen=False)


def _count(session: Session, user: User, submission: Submission, *, chosen: bool) -> None:
    """Clear the team's choice in the submission's phase, mark ``submission`` chosen when
    ``chosen``, move the leaderboard entry and audit it."""
    session.execute(update(Submission).where(Submission.team_id == submission.team_id, Submission.phase_id == submission.phase_id)
                    .values(chosen_at=None))
    if chosen:
        submission.chosen_at = utcnow()
    session.flush()
    queue.refresh_entry(session, submission.phase_id, submission.team_id)
    audit.audit(session, user.id, "submission.choose" if chosen else "submission.unchoose", f"submission:{submission.id}")


def describe(session: Session, user: User, submission_id: int, text: str, url: str = "") -> None:
    """Set the method description (one line, at most 200 characters; empty: none) and its
    optional link (an http or https URL); InvalidRequest naming the field otherwise."""
    submission = _own(session, user, submission_id)
    text, url = " ".join((text or "").split()), (url or "").strip()
    if len(text) > DESCRIPTION_CHARS:
        raise InvalidRequest(f"the description is {len(text)} characters; keep it to {DESCRIPTION_CHARS} "
                             "(link a longer write-up)", field="description")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > URL_CHARS or any(c.isspace() for c in url):
            raise InvalidRequest(f"the link must be an http:// or https:// address of at most {URL_CHARS} characters, "
                                 "such as https://github.com/your-team/method", field="url")
        if not text:
            raise InvalidRequest("a link needs a description to hang on; write one line about the method", field="description")
    submission.description, submission.description_url = text or None, url or None
    session.flush()
    queue.refresh_entry(session, submission.phase_id, submission.team_id)  # moves the board: its rows show the description
    audit.audit(session, user.id, "submission.describe", f"submission:{submission_id}", description=text, url=url)


def set_default(session: Session, slug: str, counts: str, actor_id: int | None = None) -> None:
    """Set which scored submission counts for teams that chose none (``best`` or ``last``)
    and move every team's leaderboard entry to it; audited. InvalidRequest otherwise."""
    if counts not in RULES:
        raise InvalidRequest(f"what counts must be best or last, got {counts!r}", field="counts")
    phase = challenges.phase_by_slug(session, slug)
    if phase.counts == counts:
        return
    audit.audit(session, actor_id, "phase.counts", f"phase:{slug}", counts={"from": phase.counts, "to": counts})
    phase.counts = counts
    session.flush()
    scored = select(Submission.team_id).where(Submission.phase_id == phase.id, Submission.result_evaluation_id.is_not(None))
    for team_id in session.execute(scored.distinct()).scalars().all():
        queue.refresh_entry(session, phase.id, team_id)
