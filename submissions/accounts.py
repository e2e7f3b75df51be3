"""Accounts: users, passwords, API tokens, and who may do what.

Passwords are argon2id (argon2-cffi), one scheme for the web pages and ``iugc admin
create-user`` alike. Hashes an older version wrote with scrypt (``scrypt$...``) are read
only to let their user log in, and replaced by argon2 at that log-in (:func:`needs_rehash`).
API tokens are random; only their sha256 is kept, so each is shown once.

Every function that changes records runs inside the caller's transaction and raises a
``iugc.submissions.exceptions`` error, with nothing written, for bad input.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from iugc.submissions.audit import audit
from iugc.submissions.exceptions import Conflict, Forbidden, InvalidRequest, NotAuthenticated, NotFound
from iugc.submissions.models import ApiToken, Role, User, utcnow

TOKEN_PREFIX = "iugc_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """An argon2 hash of a password nobody knows, made on first use rather than at import
    (each costs tens of milliseconds, and every command importing the service would pay it)."""
    return _hasher.hash(secrets.token_hex(8))


def is_email(text: str | None) -> bool:
    """Whether ``text`` looks like an e-mail address (the rule users and invitations share).

    >>> is_email("a@lab.org"), is_email("a@lab"), is_email(None)
    (True, False, False)
    """
    return bool(_EMAIL.match(text or ""))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``.

    >>> stored = hash_password("correct horse battery")
    >>> stored.startswith("$argon2id$"), password_matches(stored, "correct horse battery"), password_matches(stored, "wrong")
    (True, True, False)
    """
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches its argon2 hash, or the scrypt hash an older version wrote."""
    if not stored:
        _spend_time(password)
        return False
    if stored.startswith("scrypt$"):
        return _scrypt_matches(stored, password)
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _spend_time(password: str) -> None:
    """The cost of one verification, so an unknown e-mail takes as long as a wrong password."""
    try:
        _hasher.verify(_dummy_hash(), password)
    except VerificationError:
        pass


def needs_rehash(stored: str) -> bool:
    return stored.startswith("scrypt$") or _hasher.check_needs_rehash(stored)


def check_new_password(password: str, email: str) -> str | None:
    """Why ``password`` is not acceptable (None when it is).

    >>> check_new_password("short", "a@b.org")
    'a password needs at least 10 characters'
    >>> check_new_password("a@b.org-pw", "a@b.org")
    'a password must not contain your e-mail address'
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if email and email.lower() in password.lower():
        return "a password must not contain your e-mail address"
    return None


def _scrypt(password: str, salt: bytes | None = None) -> str:
    """The scrypt hash (stdlib) older versions wrote, ``scrypt$<salt hex>$<hash hex>``: read only,
    to let its user log in once and have it replaced by argon2 (:func:`needs_rehash`)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _scrypt_matches(stored: str, password: str) -> bool:
    _, salt, _ = stored.split("$")
    return hmac.compare_digest(stored, _scrypt(password, bytes.fromhex(salt)))


def create_user(session: Session, email: str, role: str, password: str | None = None, actor_id: int | None = None) -> User:
    if not is_email(email):
        raise InvalidRequest(f"{email!r} is not an e-mail address")
    if role not in Role.__members__:
        raise InvalidRequest(f"role must be one of {', '.join(Role.__members__)}, got {role!r}")
    if session.execute(select(User.id).where(User.email == email.lower())).first():
        raise Conflict(f"a user {email.lower()} already exists")
    user = User(email=email.lower(), role=Role(role), password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    audit(session, actor_id, "user.create", f"user:{user.id}", role=role)
    return user


def user_by_email(session: Session, email: str) -> User:
    user = session.execute(select(User).where(User.email == (email or "").lower())).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {email!r}; create it with `iugc admin create-user`")
    return user


def issue_token(session: Session, email: str, actor_id: int | None = None) -> str:
    """A new API token for the user; only its sha256 is kept, so it is shown once."""
    user = user_by_email(session, email)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_sha256=hashlib.sha256(token.encode()).hexdigest(), prefix=token[:12]))
    audit(session, actor_id, "token.issue", f"user:{user.id}", prefix=token[:12])
    return token


def revoke_token(session: Session, user_id: int, token_id: int, actor_id: int | None = None) -> ApiToken:
    """Stop one of the user's API tokens working, from the next request on; a token of
    someone else is NotFound, as if it did not exist."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user_id:
        raise NotFound(f"you have no API token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit(session, actor_id, "token.revoke", f"user:{user_id}", prefix=token.prefix)
    return token


_LIVE_TOKEN = (ApiToken.token_sha256 == bindparam("digest"), ApiToken.revoked_at.is_(None))
_TOKEN_USER = select(User).join(ApiToken, ApiToken.user_id == User.id).where(*_LIVE_TOKEN)  # built once: every API request pays it
_TOKEN_ROLE = select(User.role).join(ApiToken, ApiToken.user_id == User.id).where(*_LIVE_TOKEN, User.active.is_(True))


def authenticate(session: Session, token: str | None) -> User:
    """The active user of a bearer token, or NotAuthenticated."""
    if not token:
        raise NotAuthenticated("no token: send `Authorization: Bearer <token>` (`iugc admin token EMAIL` makes one)")
    digest = hashlib.sha256(token.encode()).hexdigest()
    user = session.execute(_TOKEN_USER, {"digest": digest}).scalar_one_or_none()
    if user is None or not user.active:
        raise NotAuthenticated("the token is not valid (unknown or revoked); create a new one on the site's Account page")
    return user


def caller_role(connection, token: str) -> Role | None:
    """The role of the active user of a bearer token, or None where :func:`authenticate`
    would refuse it: the same check in one row, without loading the user (for answers
    kept in front of the app). ``connection``: a Session or a Core connection."""
    return connection.execute(_TOKEN_ROLE, {"digest": hashlib.sha256(token.encode()).hexdigest()}).scalar_one_or_none()


def change_password(session: Session, user_id: int, current: str, new: str) -> User:
    """Replace the user's password; InvalidRequest naming the field at fault (``current`` or
    ``password``) otherwise. Sessions elsewhere end: a session names its user with a
    fingerprint of the password hash."""
    user = session.get(User, user_id)
    if user is None or not password_matches(user.password_hash, current):
        raise InvalidRequest("the current password is wrong", field="current")
    _set_password(session, user, new, "user.password")
    return user


def _set_password(session: Session, user: User, new: str, action: str) -> None:
    """Hash and store an acceptable new password, audited as ``action``; InvalidRequest
    (field ``password``) saying why one is not acceptable."""
    problem = check_new_password(new, user.email)
    if problem:
        raise InvalidRequest(problem, field="password")
    user.password_hash = hash_password(new)
    audit(session, user.id, action, f"user:{user.id}")


RESET_HOURS = 2


def fingerprint(password_hash: str | None) -> str:
    """A short digest of a password hash: a log-in session and a reset link carry it, so both
    stop working once the password changes."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def _reset_serializer(secret: str):
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(secret, salt="iugc-password-reset")


def reset_token(session: Session, secret: str, email: str, actor_id: int | None = None) -> str:
    """A signed link token to choose a new password, valid ``RESET_HOURS`` hours and only
    until the password changes (so once). NotFound for an unknown or deactivated address."""
    user = user_by_email(session, email)
    if not user.active:
        raise NotFound(f"the account {user.email} is deactivated")
    audit(session, actor_id, "user.reset_link", f"user:{user.id}")
    return _reset_serializer(secret).dumps({"user": user.id, "mark": fingerprint(user.password_hash)})


def user_of_reset_token(session: Session, secret: str, token: str) -> User:
    """The user a reset token is for; InvalidRequest when it is forged, expired or used."""
    from itsdangerous import BadSignature, SignatureExpired

    try:
        claim = _reset_serializer(secret).loads(token, max_age=RESET_HOURS * 3600)
        user = session.get(User, int(claim["user"]))
        mark = claim["mark"]
    except SignatureExpired:
        raise InvalidRequest(f"this reset link is older than {RESET_HOURS} hours; ask for a new one") from None
    except (BadSignature, KeyError, TypeError, ValueError):
        raise InvalidRequest("this reset link is not valid; ask for a new one and use the whole link") from None
    if user is None or not user.active or mark != fingerprint(user.password_hash):
        raise InvalidRequest("this reset link was used already (the password has changed since); ask for a new one")
    return user


def reset_password(session: Session, secret: str, token: str, new: str) -> None:
    """Set the password a reset link is for; InvalidRequest (field ``password``) saying why
    the new one is not acceptable, or why the link is not valid."""
    _set_password(session, user_of_reset_token(session, secret, token), new, "user.password_reset")


def require_organizer(user: User) -> None:
    if user.role != Role.organizer:
        raise Forbidden("only organizers may do this")


def log_in(session: Session, email: str, password: str) -> User | None:
    """The active user with this e-mail address and password, or None (as slow for an unknown
    address as for a wrong password). A hash of an older scheme is replaced by argon2 here."""
    user = session.execute(select(User).where(User.email == (email or "").strip().lower())).scalar_one_or_none()
    if not password_matches(user.password_hash if user else None, password) or not user.active:
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def tokens_of(session: Session, user_id: int) -> list[ApiToken]:
    """The user's API tokens, newest first (only their prefixes can be shown)."""
    return session.execute(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())).scalars().all()
