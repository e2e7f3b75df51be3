"""Teams: creating one, joining by a signed link or an e-mail invitation, leaving; the same
functions serve the web pages and API v1.

A participant belongs to at most one team per challenge. A signed link names the team and
is valid for ``INVITE_DAYS`` days; an e-mail invitation is a random token of which only the
sha256 is kept, valid for ``INVITE_DAYS`` days and used once, by the user registered with
the address it was sent to. Every change writes an audit entry, in the caller's transaction.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iugc.common.text import quoted
from iugc.submissions.accounts import is_email
from iugc.submissions.audit import audit
from iugc.submissions.exceptions import Conflict, Forbidden, InvalidRequest, NotFound
from iugc.submissions.models import Challenge, Invitation, Membership, Team, User, utcnow

INVITE_DAYS = 7


def create_team(session: Session, user: User, name: str, challenge_name: str | None = None) -> Team:
    """A team in a challenge with ``user`` as its first member (one team per user per challenge)."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise InvalidRequest("a team name is 1 to 100 printable characters")
    challenges = session.execute(select(Challenge).order_by(Challenge.id)).scalars().all()
    if challenge_name is None:
        if len(challenges) != 1:
            raise InvalidRequest(f"say which challenge: one of {', '.join(c.name for c in challenges) or 'none yet'}")
        challenge = challenges[0]
    else:
        challenge = next((c for c in challenges if c.name == challenge_name), None)
        if challenge is None:
            raise NotFound(f"no challenge {quoted(challenge_name)}")
    if session.execute(select(Membership.id).where(Membership.user_id == user.id, Membership.challenge_id == challenge.id)).first():
        raise Conflict(f"you are already in a team of {challenge.name}; a participant belongs to one team per challenge")
    if session.execute(select(Team.id).where(Team.challenge_id == challenge.id, Team.name == name)).first():
        raise Conflict(f"the team name {name!r} is taken in {challenge.name}")
    team = Team(challenge_id=challenge.id, name=name)
    session.add(team)
    try:
        with session.begin_nested():
            session.flush()
            session.add(Membership(team_id=team.id, user_id=user.id, challenge_id=challenge.id))
            session.flush()
    except IntegrityError:  # a concurrent request took the name or joined first
        raise Conflict(f"the team name {name!r} is taken in {challenge.name}, or you joined a team meanwhile") from None
    audit(session, user.id, "team.create", f"team:{team.id}", name=name)
    return team


def terms_of(challenge: Challenge) -> str | None:
    """The terms a team of ``challenge`` accepts before its first submission (None: none)."""
    return (challenge.definition or {}).get("terms")


def accept_terms(session: Session, user: User, challenge_id: int) -> Team:
    """``user`` accepts the challenge's terms for their team, once (recorded with when and
    by whom, and audited); accepting again changes nothing. Forbidden when not in a team,
    NotFound when the challenge has no terms."""
    team = team_of(session, user, challenge_id)
    if team is None:
        raise Forbidden("you are in no team of this challenge: create or join one first, then accept its terms")
    if terms_of(team.challenge) is None:
        raise NotFound(f"challenge {team.challenge.name} has no terms to accept")
    if team.terms_accepted_at is None:
        team.terms_accepted_at, team.terms_accepted_by_id = utcnow(), user.id
        audit(session, user.id, "team.accept_terms", f"team:{team.id}", challenge=team.challenge.name)
    return team


def team_of(session: Session, user: User, challenge_id: int) -> Team | None:
    return session.execute(
        select(Team).join(Membership).where(Membership.user_id == user.id, Membership.challenge_id == challenge_id)
    ).scalar_one_or_none()


def teams_of(session: Session, user: User) -> list[tuple[Challenge, Team | None]]:
    """Each challenge with the user's team in it (None where they have none)."""
    challenges = session.execute(select(Challenge).order_by(Challenge.id)).scalars().all()
    return [(c, team_of(session, user, c.id)) for c in challenges]


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
    if team_of(session, user, team.challenge_id) is not None:
        raise Conflict(f"you are already in a team of {team.challenge.name}; leave it first")
    try:
        with session.begin_nested():
            session.add(Membership(team_id=team.id, user_id=user.id, challenge_id=team.challenge_id))
            session.flush()
    except IntegrityError:
        raise Conflict(f"you joined a team of {team.challenge.name} meanwhile") from None
    audit(session, user.id, "team.join", f"team:{team.id}")


def leave_team(session: Session, user: User, team_id: int) -> None:
    """Remove ``user`` from the team; its submissions stay the team's."""
    done = session.execute(delete(Membership).where(Membership.team_id == team_id, Membership.user_id == user.id))
    if done.rowcount != 1:
        raise NotFound("you are not a member of this team")
    audit(session, user.id, "team.leave", f"team:{team_id}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite(session: Session, inviter: User, team_id: int, email: str, now: dt.datetime | None = None) -> tuple[Invitation, str]:
    """A new invitation of ``email`` to the inviter's team; returns (row, token). The token
    is shown or sent once; only its sha256 is kept."""
    email = (email or "").strip().lower()
    if not is_email(email):
        raise InvalidRequest(f"{email!r} is not an e-mail address")
    team = session.get(Team, team_id)
    member = team is not None and session.execute(select(Membership.id).where(
        Membership.team_id == team_id, Membership.user_id == inviter.id)).first()
    if not member:
        raise NotFound("you are not a member of this team")
    if email == inviter.email:
        raise InvalidRequest("that is your own address; invite a team-mate")
    token = secrets.token_urlsafe(32)
    now = now or utcnow()
    invitation = Invitation(team_id=team_id, email=email, token_sha256=_digest(token), invited_by_id=inviter.id,
                            created_at=now, expires_at=now + dt.timedelta(days=INVITE_DAYS))
    session.add(invitation)
    session.flush()
    audit(session, inviter.id, "team.invite", f"team:{team_id}", invitation=invitation.id, email=email)
    return invitation, token


def find_invitation(session: Session, token: str, user: User, now: dt.datetime | None = None) -> Invitation:
    """The invitation of ``token`` if ``user`` may accept it now, else a clear refusal."""
    invitation = session.execute(select(Invitation).where(Invitation.token_sha256 == _digest(token or ""))).scalar_one_or_none()
    if invitation is None:
        raise NotFound("this invitation link is not valid; ask the team to invite you again")
    if invitation.used_at is not None:
        raise InvalidRequest(f"this invitation was already used on {invitation.used_at:%Y-%m-%d %H:%M} UTC; ask the team for a new one")
    if (now or utcnow()) >= invitation.expires_at:
        raise InvalidRequest(f"this invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC; ask the team for a new one")
    if invitation.email != user.email:
        raise Forbidden("this invitation was sent to another e-mail address: log in (or register) with the address it was sent to")
    return invitation


def join_by_invitation(session: Session, user: User, secret: str, token: str) -> Team:
    """Join with either kind of invitation: an e-mail invitation's token (used up, for its
    address only) or a team link's signed token (``secret`` signed it)."""
    if session.execute(select(Invitation.id).where(Invitation.token_sha256 == _digest(token or ""))).first():
        return accept_invitation(session, token, user)
    team = team_of_invitation(session, secret, token)
    join_team(session, user, team)
    return team


def pending_invitations(session: Session, team_id: int) -> list[Invitation]:
    """The team's e-mail invitations not used yet (expired ones included: the page says so), oldest first."""
    return session.execute(select(Invitation).where(Invitation.team_id == team_id, Invitation.used_at.is_(None))
                           .order_by(Invitation.id)).scalars().all()


def accept_invitation(session: Session, token: str, user: User, now: dt.datetime | None = None) -> Team:
    """Join the invitation's team (one team per user per challenge) and use the invitation up."""
    invitation = find_invitation(session, token, user, now)
    join_team(session, user, invitation.team)
    invitation.used_at, invitation.used_by_id = now or utcnow(), user.id
    session.flush()
    return invitation.team
