"""Organizer and account operations: challenges and phases from their definition files,
hidden datasets, users, API tokens, teams, publishing. Each writes an audit entry.

Every function runs inside the caller's transaction (``db.transaction``) and raises a
``submissions.exceptions`` error, with nothing written, for bad input.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from challenge.definition import ChallengeDefinition, DefinitionError, load_challenge
from submissions.exceptions import Conflict, Forbidden, InvalidRequest, NotAuthenticated, NotFound
from submissions.models import ApiToken, AuditEntry, Challenge, Dataset, Membership, Phase, Role, Team, User, utcnow

TOKEN_PREFIX = "iugc_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_email(text: str | None) -> bool:
    """Whether ``text`` looks like an e-mail address (the rule users and invitations share).

    >>> is_email("a@lab.org"), is_email("a@lab"), is_email(None)
    (True, False, False)
    """
    return bool(_EMAIL.match(text or ""))


def audit(session: Session, actor_id: int | None, action: str, target: str | None = None, **detail) -> None:
    session.add(AuditEntry(actor_id=actor_id, action=action, target=target, detail=detail or None))


_DEFINITIONS: dict[str, ChallengeDefinition] = {}
"""Validated definitions by their sha256: a challenge's definition never changes (another
definition is another challenge), and validating one costs more than a leaderboard query."""


def definition_of(challenge: Challenge) -> ChallengeDefinition:
    """The validated definition a challenge row was created from (validated once per
    process; the row's ``definition`` column is read only then)."""
    definition = _DEFINITIONS.get(challenge.definition_sha256)
    if definition is None:
        definition = _DEFINITIONS[challenge.definition_sha256] = ChallengeDefinition.model_validate(challenge.definition)
    return definition


def init_challenge(session: Session, name_or_path: str | Path, actor_id: int | None = None) -> tuple[Challenge, bool]:
    """Create a challenge and its phases from a definition; returns (row, whether created).

    Repeating it with the same definition changes nothing; a different definition under
    the same name is a Conflict (a new challenge is a new name).
    """
    try:
        definition = load_challenge(name_or_path)
    except DefinitionError as exc:
        raise InvalidRequest(str(exc)) from None
    document = json.loads(definition.model_dump_json())
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    existing = session.execute(select(Challenge).where(Challenge.name == definition.name)).scalar_one_or_none()
    if existing is not None:
        if existing.definition_sha256 != digest:
            raise Conflict(f"challenge {definition.name!r} already exists with a different definition; give the new one another name")
        return existing, False
    challenge = Challenge(name=definition.name, title=definition.title, definition=document, definition_sha256=digest)
    session.add(challenge)
    for phase in definition.phases:
        from sandbox.docker_engine import Limits

        limits = Limits.from_phase(phase)
        session.add(Phase(
            challenge=challenge, name=phase.name, slug=f"{definition.name}-{phase.name}", title=phase.description,
            kind=phase.kind, opens_at=phase.opens, closes_at=phase.closes,
            submissions_per_day=phase.limits.submissions_per_day, submissions_total=phase.limits.submissions_total,
            failures_count=phase.failures_count_against_quota, logs_visible=phase.logs_visible_to_participants,
            public_cases=phase.public_cases,
            limits={k: getattr(limits, k) for k in limits.__dataclass_fields__},
        ))
    session.flush()
    audit(session, actor_id, "challenge.init", f"challenge:{definition.name}", definition_sha256=digest)
    return challenge, True


def phase_by_slug(session: Session, slug: str) -> Phase:
    phase = session.execute(select(Phase).options(joinedload(Phase.challenge)).where(Phase.slug == slug)).scalar_one_or_none()
    if phase is None:
        slugs = session.execute(select(Phase.slug).order_by(Phase.id)).scalars().all()
        raise NotFound(f"no phase {slug!r}; phases: {', '.join(slugs) or 'none (run `iugc admin init`)'}")
    return phase


def add_dataset(session: Session, slug: str, folder: str | Path, actor_id: int | None = None,
                expected_sha256: str | None = None) -> Dataset:
    """Register a hidden dataset (a folder from `iugc data import`) for a phase; it replaces
    the phase's previous one for new evaluations (old evaluations keep theirs).

    The manifest must be valid and every file must match its checksum (``iugc data
    verify``); ``expected_sha256``, when given, must be the sha256 of ``manifest.json``
    (``sha256sum DIR/manifest.json``), so the folder is the one the organizer meant.
    """
    from data_manifest.manifest import ManifestError, load_manifest
    from data_manifest.verify import verify_dataset

    phase = phase_by_slug(session, slug)
    folder = Path(folder).absolute()
    if not folder.is_dir():
        raise InvalidRequest(f"{folder} is not a folder on the server; give the path of a dataset from `iugc data import`")
    try:
        manifest = load_manifest(folder)
        problems = verify_dataset(folder)
    except (ManifestError, OSError) as exc:
        raise InvalidRequest(f"{folder} is not a dataset from `iugc data import`: {exc}") from None
    if problems:
        raise InvalidRequest(f"{folder} fails `iugc data verify` ({len(problems)} problem(s)), first: {problems[0]}")
    if "landmarks" in definition_of(phase.challenge).tasks and not any(c.aop_landmarks for c in manifest.cases):
        raise InvalidRequest(f"{folder} has no landmark truth (PS1, PS2, FH1) for the landmark challenge {phase.challenge.name}; "
                             f"import the release with `iugc data import --layout iugc2025`, or derive the points from masks "
                             f"with `iugc data landmarks {folder}`")
    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    if expected_sha256 is not None and expected_sha256.strip().lower() != digest:
        raise InvalidRequest(f"the sha256 of {folder / 'manifest.json'} is {digest}, not {expected_sha256.strip()!r}: check the folder")
    for old in phase.datasets:
        old.active = False
    dataset = Dataset(phase_id=phase.id, path=str(folder), manifest_sha256=digest, n_cases=len(manifest.cases), registered_by_id=actor_id)
    session.add(dataset)
    session.flush()
    audit(session, actor_id, "dataset.add", f"phase:{slug}", dataset_id=dataset.id, manifest_sha256=digest, n_cases=len(manifest.cases))
    return dataset


def parse_time(text: str | None):
    """A phase bound from ISO 8601 text (no zone given: UTC); None for empty or "none".

    >>> parse_time("2026-12-01T10:00"), parse_time("none")
    (datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.timezone.utc), None)
    >>> parse_time("next week")
    Traceback (most recent call last):
    ...
    submissions.exceptions.InvalidRequest: 'next week' is not a time: write it as 2026-12-31T23:59 (UTC) or leave it empty
    """
    import datetime as dt

    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a time: write it as 2026-12-31T23:59 (UTC) or leave it empty") from None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


KEEP = object()
"""The default of :func:`update_phase`'s settings: leave that setting as it is."""


def update_phase(session: Session, slug: str, *, opens_at=KEEP, closes_at=KEEP, submissions_per_day=KEEP,
                 submissions_total=KEEP, failures_count=KEEP, actor_id: int | None = None) -> Phase:
    """Change a phase's window and quotas; returns the phase. Settings left at ``KEEP`` stay.

    ``opens_at``/``closes_at``: timezone-aware datetimes or None (no bound), closing after
    opening; ``submissions_per_day``: an int >= 1 (per rolling 24 hours);
    ``submissions_total``: an int >= 1 or None (no total); ``failures_count``: whether a
    failure the submission caused uses up quota. InvalidRequest, with nothing changed, for
    anything else. The audit entry keeps each changed setting's old and new value.
    """
    phase = phase_by_slug(session, slug)
    new = {"opens_at": phase.opens_at, "closes_at": phase.closes_at, "submissions_per_day": phase.submissions_per_day,
           "submissions_total": phase.submissions_total, "failures_count": phase.failures_count}
    given = {"opens_at": opens_at, "closes_at": closes_at, "submissions_per_day": submissions_per_day,
             "submissions_total": submissions_total, "failures_count": failures_count}
    new.update({k: v for k, v in given.items() if v is not KEEP})
    for key in ("opens_at", "closes_at"):
        value = new[key]
        if value is not None and (not hasattr(value, "tzinfo") or value.tzinfo is None):
            raise InvalidRequest(f"{key} must be a timezone-aware time or none, got {value!r}")
    if new["opens_at"] and new["closes_at"] and new["closes_at"] <= new["opens_at"]:
        raise InvalidRequest(f"the phase must close after it opens: opens {new['opens_at'].isoformat()}, closes {new['closes_at'].isoformat()}")
    per_day, total = new["submissions_per_day"], new["submissions_total"]
    if not isinstance(per_day, int) or isinstance(per_day, bool) or per_day < 1:
        raise InvalidRequest(f"submissions per 24 hours must be a whole number of at least 1, got {per_day!r}")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 1):
        raise InvalidRequest(f"the total of submissions must be a whole number of at least 1 or none, got {total!r}")
    if not isinstance(new["failures_count"], bool):
        raise InvalidRequest(f"failures_count must be true or false, got {new['failures_count']!r}")
    changes = {}
    for key, value in new.items():
        old = getattr(phase, key)
        if value != old:
            shown = [v.isoformat() if hasattr(v, "isoformat") else v for v in (old, value)]
            changes[key] = {"from": shown[0], "to": shown[1]}
            setattr(phase, key, value)
    if changes:
        session.flush()
        audit(session, actor_id, "phase.update", f"phase:{slug}", **changes)
    return phase


def active_dataset(session: Session, phase_id: int) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.phase_id == phase_id, Dataset.active.is_(True)).order_by(Dataset.id.desc())
    ).scalars().first()


def hash_password(password: str, salt: bytes | None = None) -> str:
    """scrypt (stdlib), ``scrypt$<salt hex>$<hash hex>``.

    >>> stored = hash_password("correct horse")
    >>> check_password(stored, "correct horse"), check_password(stored, "wrong")
    (True, False)
    """
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    _, salt, _ = stored.split("$")
    return hmac.compare_digest(stored, hash_password(password, bytes.fromhex(salt)))


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


_TOKEN_USER = (  # one query, built once: every API request pays it
    select(User).join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_sha256 == bindparam("digest"), ApiToken.revoked_at.is_(None)))


def authenticate(session: Session, token: str | None) -> User:
    """The active user of a bearer token, or NotAuthenticated."""
    if not token:
        raise NotAuthenticated("no token: send `Authorization: Bearer <token>` (`iugc admin token EMAIL` makes one)")
    digest = hashlib.sha256(token.encode()).hexdigest()
    user = session.execute(_TOKEN_USER, {"digest": digest}).scalar_one_or_none()
    if user is None or not user.active:
        raise NotAuthenticated("the token is not valid (unknown or revoked); ask an organizer for a new one")
    return user


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
            raise NotFound(f"no challenge {challenge_name!r}")
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


def team_of(session: Session, user: User, challenge_id: int) -> Team | None:
    return session.execute(
        select(Team).join(Membership).where(Membership.user_id == user.id, Membership.challenge_id == challenge_id)
    ).scalar_one_or_none()


def require_organizer(user: User) -> None:
    if user.role != Role.organizer:
        raise Forbidden("only organizers may do this")


def publish(session: Session, slug: str, actor_id: int | None = None) -> Phase:
    """Show a phase's results (final-phase results stay hidden from participants until then)."""
    phase = phase_by_slug(session, slug)
    if not phase.results_published:
        phase.results_published, phase.published_at = True, utcnow()
        audit(session, actor_id, "phase.publish", f"phase:{slug}")
    return phase
