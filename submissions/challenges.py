"""Challenges and their phases: created from their definition files, a phase's window and
quotas, its hidden dataset, publishing its results.

Every function that changes records runs inside the caller's transaction
(``db.transaction``), writes an audit entry, and raises a ``iugc.submissions.exceptions`` error,
with nothing written, for bad input.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from iugc.common.text import quoted
from iugc.challenge.definition import ChallengeDefinition, DefinitionError, load_challenge
from iugc.submissions.audit import audit
from iugc.submissions.exceptions import Conflict, InvalidRequest, NotFound
from iugc.submissions.models import Challenge, Dataset, Phase, utcnow

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
        from iugc.sandbox.docker_engine import Limits

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


def challenge_by_name(session: Session, name: str) -> Challenge:
    challenge = session.execute(select(Challenge).where(Challenge.name == name)).scalar_one_or_none()
    if challenge is None:
        raise NotFound(f"no challenge {quoted(name)}")
    return challenge


def phase_slugs(session: Session) -> list[str]:
    """Every phase's slug, in the order the phases were made."""
    return session.execute(select(Phase.slug).order_by(Phase.id)).scalars().all()


def phase_by_slug(session: Session, slug: str) -> Phase:
    phase = session.execute(select(Phase).options(joinedload(Phase.challenge)).where(Phase.slug == slug)).scalar_one_or_none()
    if phase is None:
        slugs = phase_slugs(session)
        raise NotFound(f"no phase {quoted(slug)}; phases: {', '.join(slugs) or 'none (run `iugc admin init`)'}")
    return phase


def add_dataset(session: Session, slug: str, folder: str | Path, actor_id: int | None = None,
                expected_sha256: str | None = None) -> Dataset:
    """Register a hidden dataset (a folder from `iugc data import`) for a phase; it replaces
    the phase's previous one for new evaluations (old evaluations keep theirs).

    The manifest must be valid and every file must match its checksum (``iugc data
    verify``); ``expected_sha256``, when given, must be the sha256 of ``manifest.json``
    (``sha256sum DIR/manifest.json``), so the folder is the one the organizer meant.
    """
    from iugc.data_manifest.manifest import ManifestError, load_manifest
    from iugc.data_manifest.verify import verify_dataset

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


def parse_time(text: str | None, field: str | None = None):
    """A phase bound from ISO 8601 text (no zone given: UTC); None for empty or "none".

    >>> parse_time("2026-12-01T10:00"), parse_time("none")
    (datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.timezone.utc), None)
    >>> parse_time("next week")
    Traceback (most recent call last):
    ...
    iugc.submissions.exceptions.InvalidRequest: 'next week' is not a time: write it as 2026-12-31T23:59 (UTC) or leave it empty
    """
    import datetime as dt

    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a time: write it as 2026-12-31T23:59 (UTC) or leave it empty", field=field) from None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


MAX_QUOTA = 1_000_000
"""The largest quota a phase takes (the database keeps 32-bit integers)."""
KEEP = object()
"""The default of :func:`update_phase`'s settings: leave that setting as it is."""


def update_phase(session: Session, slug: str, *, opens_at=KEEP, closes_at=KEEP, submissions_per_day=KEEP,
                 submissions_total=KEEP, failures_count=KEEP, queue_without_worker=KEEP, actor_id: int | None = None) -> Phase:
    """Change a phase's window and quotas; returns the phase. Settings left at ``KEEP`` stay.

    ``opens_at``/``closes_at``: timezone-aware datetimes or None (no bound), closing after
    opening; ``submissions_per_day``: an int >= 1 (per rolling 24 hours);
    ``submissions_total``: an int >= 1 or None (no total); ``failures_count``: whether a
    failure the submission caused uses up quota; ``queue_without_worker``: whether uploads
    no running worker can evaluate are queued (``capacity``). InvalidRequest, with nothing changed, for
    anything else. The audit entry keeps each changed setting's old and new value.
    """
    phase = phase_by_slug(session, slug)
    new = {"opens_at": phase.opens_at, "closes_at": phase.closes_at, "submissions_per_day": phase.submissions_per_day,
           "submissions_total": phase.submissions_total, "failures_count": phase.failures_count,
           "queue_without_worker": phase.queue_without_worker}
    given = {"opens_at": opens_at, "closes_at": closes_at, "submissions_per_day": submissions_per_day,
             "submissions_total": submissions_total, "failures_count": failures_count, "queue_without_worker": queue_without_worker}
    new.update({k: v for k, v in given.items() if v is not KEEP})
    for key in ("opens_at", "closes_at"):
        value = new[key]
        if value is not None and (not hasattr(value, "tzinfo") or value.tzinfo is None):
            raise InvalidRequest(f"{key} must be a timezone-aware time or none, got {value!r}", field=key)
    if new["opens_at"] and new["closes_at"] and new["closes_at"] <= new["opens_at"]:
        raise InvalidRequest(f"the phase must close after it opens: opens {new['opens_at'].isoformat()}, closes {new['closes_at'].isoformat()}",
                             field="closes_at")
    per_day, total = new["submissions_per_day"], new["submissions_total"]
    if not isinstance(per_day, int) or isinstance(per_day, bool) or not 1 <= per_day <= MAX_QUOTA:
        raise InvalidRequest(f"submissions per 24 hours must be a whole number from 1 to {MAX_QUOTA:,}, got {per_day!r}",
                             field="submissions_per_day")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or not 1 <= total <= MAX_QUOTA):
        raise InvalidRequest(f"the total of submissions must be a whole number from 1 to {MAX_QUOTA:,} or none, got {total!r}",
                             field="submissions_total")
    for key in ("failures_count", "queue_without_worker"):
        if not isinstance(new[key], bool):
            raise InvalidRequest(f"{key} must be true or false, got {new[key]!r}", field=key)
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


def set_limits(session: Session, slug: str, limits: dict, actor_id: int | None = None) -> Phase:
    """Replace a phase's limits of one evaluation (new uploads and re-evaluations run under
    them); they must be valid ``iugc.sandbox.docker_engine.Limits`` (InvalidRequest naming
    the fault, nothing changed). The audit entry keeps each changed limit's old and new value."""
    import dataclasses

    from iugc.sandbox.docker_engine import Limits

    phase = phase_by_slug(session, slug)
    known = [f.name for f in dataclasses.fields(Limits)]
    unknown = sorted(set(limits) - set(known))
    if unknown:
        raise InvalidRequest(f"no limit {', '.join(unknown)}; the limits are {', '.join(known)}", field="limits")
    try:
        new = dataclasses.asdict(Limits(**limits))
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="limits") from None
    changes = {k: {"from": phase.limits.get(k), "to": v} for k, v in new.items() if phase.limits.get(k) != v}
    if changes:
        phase.limits = new
        audit(session, actor_id, "phase.limits", f"phase:{slug}", **changes)
    return phase


def active_dataset(session: Session, phase_id: int) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.phase_id == phase_id, Dataset.active.is_(True)).order_by(Dataset.id.desc())
    ).scalars().first()


def publish(session: Session, slug: str, actor_id: int | None = None) -> Phase:
    """Show a phase's results (final-phase results stay hidden from participants until then)."""
    phase = phase_by_slug(session, slug)
    if not phase.results_published:
        phase.results_published, phase.published_at = True, utcnow()
        audit(session, actor_id, "phase.publish", f"phase:{slug}")
    return phase


def unpublish(session: Session, slug: str, actor_id: int | None = None) -> Phase:
    """Hide a phase's results again (published by mistake, or a result under review): a
    final-test board goes back to organizers only; publishing again shows it again."""
    phase = phase_by_slug(session, slug)
    if phase.results_published:
        audit(session, actor_id, "phase.unpublish", f"phase:{slug}", published_at=phase.published_at.isoformat() if phase.published_at else None)
        phase.results_published, phase.published_at = False, None
    return phase
