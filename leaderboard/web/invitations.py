"""Invitations to a team by e-mail address (beside the signed links of ``queries``).

A member invites an address; the invitation is a random token of which only the sha256 is
kept (``Invitation``), valid for ``INVITE_DAYS`` days and used once, by a user registered
with that address. The link goes out by e-mail through the SMTP server the organizers
configure (``IUGC_SMTP_URL``: ``smtp://[USER:PASSWORD@]HOST[:PORT]``, ``smtp+starttls://``
or ``smtps://``; sender ``IUGC_MAIL_FROM``); without one, or when the server refuses, the
page shows the link to the inviter to pass on, and says why.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from submissions import admin
from submissions.exceptions import ConfigurationError, Forbidden, InvalidRequest, NotFound
from submissions.models import Invitation, Membership, Team, User, utcnow
from leaderboard.web import queries

INVITE_DAYS = 7
SMTP_TIMEOUT_SECONDS = 10
SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(session: Session, inviter: User, team_id: int, email: str, now: dt.datetime | None = None) -> tuple[Invitation, str]:
    """A new invitation of ``email`` to the inviter's team; returns (row, token). The token
    is shown or sent once; only its sha256 is kept."""
    email = (email or "").strip().lower()
    if not admin.is_email(email):
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
    admin.audit(session, inviter.id, "team.invite", f"team:{team_id}", invitation=invitation.id, email=email)
    return invitation, token


def find(session: Session, token: str, user: User, now: dt.datetime | None = None) -> Invitation:
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


def accept(session: Session, token: str, user: User, now: dt.datetime | None = None) -> Team:
    """Join the invitation's team (one team per user per challenge) and use the invitation up."""
    invitation = find(session, token, user, now)
    queries.join_team(session, user, invitation.team)
    invitation.used_at, invitation.used_by_id = now or utcnow(), user.id
    session.flush()
    return invitation.team


def parse_smtp_url(url: str) -> dict:
    """The SMTP server of ``IUGC_SMTP_URL`` as connection settings.

    >>> parse_smtp_url("smtp+starttls://bot%40lab.org:s3cret@mail.lab.org")
    {'scheme': 'smtp+starttls', 'host': 'mail.lab.org', 'port': 587, 'user': 'bot@lab.org', 'password': 's3cret'}
    >>> parse_smtp_url("http://x")
    Traceback (most recent call last):
    ...
    submissions.exceptions.ConfigurationError: IUGC_SMTP_URL must be smtp://, smtp+starttls:// or smtps://[USER:PASSWORD@]HOST[:PORT], got a http:// URL
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigurationError(f"IUGC_SMTP_URL must be smtp://, smtp+starttls:// or smtps://[USER:PASSWORD@]HOST[:PORT], got a {parts.scheme}:// URL")
    return {"scheme": parts.scheme, "host": parts.hostname, "port": parts.port or SCHEMES[parts.scheme],
            "user": unquote(parts.username) if parts.username else None, "password": unquote(parts.password) if parts.password else None}


def message(sender: str, to: str, team: str, inviter: str, link: str, expires: dt.datetime) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, f"Join team {team} on the IUGC challenge platform"
    mail.set_content(
        f"{inviter} invites you to join the team {team}.\n\n"
        f"Open this link while logged in as {to} (register with that address first if you have no account):\n\n"
        f"{link}\n\nThe invitation can be used once, until {expires:%Y-%m-%d %H:%M} UTC.\n")
    return mail


def send(smtp_url: str, mail: EmailMessage) -> None:
    """Deliver ``mail`` through the configured server; ``OSError``/``smtplib.SMTPException`` on failure."""
    server = parse_smtp_url(smtp_url)
    if server["scheme"] == "smtps":
        client = smtplib.SMTP_SSL(server["host"], server["port"], timeout=SMTP_TIMEOUT_SECONDS, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(server["host"], server["port"], timeout=SMTP_TIMEOUT_SECONDS)
    with client:
        if server["scheme"] == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if server["user"]:
            client.login(server["user"], server["password"] or "")
        client.send_message(mail)
