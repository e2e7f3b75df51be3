"""The service's records (SQLAlchemy 2 ORM). The schema is created and changed only by the
Alembic migrations in ``submissions/migrations`` (``iugc db upgrade``); a test checks that
these classes and the migrations agree.

Times are timezone-aware UTC (stored as naive UTC, which SQLite and PostgreSQL both keep).
JSON columns hold what the evaluator returned, unchanged.
"""
from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime, stored naive (UTC) so SQLite and PostgreSQL agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) time")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime()}


class Role(str, enum.Enum):
    organizer = "organizer"
    participant = "participant"


class State(str, enum.Enum):
    """Lifecycle of an evaluation (and of its submission: the latest evaluation's state)."""

    received = "received"
    validating = "validating"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL = frozenset({State.succeeded, State.failed, State.cancelled})


def _enum(cls, name):
    return Enum(cls, name=name, native_enum=False, validate_strings=True, length=16)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    memberships: Mapped[list["Membership"]] = relationship(back_populates="user")


class Challenge(Base):
    """A challenge loaded from its definition file; the definition is kept as loaded."""

    __tablename__ = "challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    definition: Mapped[dict] = mapped_column(JSON, deferred=True)  # read on a cache miss of challenges.definition_of
    definition_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    phases: Mapped[list["Phase"]] = relationship(back_populates="challenge", order_by="Phase.id")
    teams: Mapped[list["Team"]] = relationship(back_populates="challenge")


class Phase(Base):
    """A phase of a challenge; ``slug`` (``<challenge>-<phase>``) names it in the API."""

    __tablename__ = "phases"
    __table_args__ = (UniqueConstraint("challenge_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id"))
    name: Mapped[str] = mapped_column(String(64))
    slug: Mapped[str] = mapped_column(String(130), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    opens_at: Mapped[dt.datetime | None]
    closes_at: Mapped[dt.datetime | None]
    submissions_per_day: Mapped[int]
    submissions_total: Mapped[int | None]
    failures_count: Mapped[bool] = mapped_column(Boolean)
    logs_visible: Mapped[bool] = mapped_column(Boolean)
    public_cases: Mapped[bool] = mapped_column(Boolean)
    limits: Mapped[dict] = mapped_column(JSON)
    results_published: Mapped[bool] = mapped_column(Boolean, default=False)
    published_at: Mapped[dt.datetime | None]
    board_version: Mapped[int] = mapped_column(default=0, server_default="0")
    """Moved by every change of the phase's leaderboard entries (``queue.refresh_entry``)."""
    counts: Mapped[str] = mapped_column(String(8), default="best", server_default="best")
    """Which of a team's scored submissions counts when it chose none: ``best`` (the
    highest score) or ``last`` (the latest scored) (``counting.set_default``)."""
    queue_without_worker: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Accept uploads that no running worker can evaluate (for workers started on demand);
    they wait in the queue. Otherwise such an upload is refused (``capacity``)."""

    challenge: Mapped[Challenge] = relationship(back_populates="phases")
    datasets: Mapped[list["Dataset"]] = relationship(back_populates="phase", order_by="Dataset.id")


class Dataset(Base):
    """A hidden dataset registered for a phase. ``path`` is never shown to participants."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    n_cases: Mapped[int]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    registered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    phase: Mapped[Phase] = relationship(back_populates="datasets")


class Team(Base):
    """A team. A disqualified team (``disqualified_reason`` set, by an organizer) leaves
    every leaderboard of its challenge and may not submit; reinstating clears it."""

    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("challenge_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disqualified_at: Mapped[dt.datetime | None]
    disqualified_reason: Mapped[str | None] = mapped_column(Text)
    terms_accepted_at: Mapped[dt.datetime | None]
    """When a member accepted the challenge's terms for the team (``teams.accept_terms``)."""
    terms_accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    challenge: Mapped[Challenge] = relationship(back_populates="teams")
    terms_accepted_by: Mapped["User | None"] = relationship(foreign_keys=[terms_accepted_by_id])
    memberships: Mapped[list["Membership"]] = relationship(back_populates="team")


class Membership(Base):
    """A user in a team. One team per user per challenge (the unique constraint)."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "challenge_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id"))
    joined_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    team: Mapped[Team] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class Submission(Base):
    """An uploaded image. ``status`` mirrors its latest evaluation's state; ``score`` and
    ``result_evaluation_id`` name its latest successful evaluation (the leaderboard's)."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("phase_id", "team_id", "archive_sha256"),
        Index("ix_submissions_team_phase_created", "team_id", "phase_id", "created_at"),
        Index("ix_submissions_phase_team_score", "phase_id", "team_id", "score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"), index=True)
    uploader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    archive_size: Mapped[int] = mapped_column(BigInteger)
    image_digest: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[State] = mapped_column(_enum(State, "state"), default=State.received)
    counts_against_quota: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # the latest successful evaluation and its score (set with it): what the leaderboard reads
    result_evaluation_id: Mapped[int | None]
    score: Mapped[float | None] = mapped_column(Float)
    # set by an organizer: the submission no longer counts for the leaderboard (reversible)
    disqualified_at: Mapped[dt.datetime | None]
    disqualified_reason: Mapped[str | None] = mapped_column(Text)
    # set by the team: what the leaderboard row says of the method, and that this one counts
    description: Mapped[str | None] = mapped_column(Text)
    description_url: Mapped[str | None] = mapped_column(String(500))
    chosen_at: Mapped[dt.datetime | None]

    team: Mapped[Team] = relationship()
    phase: Mapped[Phase] = relationship()
    evaluations: Mapped[list["Evaluation"]] = relationship(back_populates="submission", order_by="Evaluation.number")


class Evaluation(Base):
    """One run of a submission on its phase's dataset, with what makes it reproducible.

    ``worker_id`` (``host:pid:start``) holds a running evaluation and must match when its
    result is written, so a result is stored once even when two workers race for it. The
    partial unique index allows at most one running evaluation per team.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("submission_id", "number"),
        Index("ix_evaluations_status_id", "status", "id"),
        Index("ix_evaluations_submission_status", "submission_id", "status", "number"),
        Index(
            "uq_evaluations_one_running_per_team", "team_id", unique=True,
            sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    number: Mapped[int]
    status: Mapped[State] = mapped_column(_enum(State, "state"), default=State.received)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    platform_fault: Mapped[bool] = mapped_column(Boolean, default=False)
    log_tail: Mapped[str | None] = mapped_column(Text)
    # reproducibility
    image_digest: Mapped[str | None] = mapped_column(String(80))
    evaluator_version: Mapped[str | None] = mapped_column(String(64))
    definition_sha256: Mapped[str | None] = mapped_column(String(64))
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    limits: Mapped[dict | None] = mapped_column(JSON)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_id: Mapped[str | None] = mapped_column(String(300))
    heartbeat_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    # the result
    aggregates: Mapped[dict | None] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float)
    result_key: Mapped[str | None] = mapped_column(String(200))

    submission: Mapped[Submission] = relationship(back_populates="evaluations")
    history: Mapped[list["StatusChange"]] = relationship(back_populates="evaluation", order_by="StatusChange.id")
    cases: Mapped[list["CaseResult"]] = relationship(back_populates="evaluation", order_by="CaseResult.case_id")


class Worker(Base):
    """A running evaluation worker and what its engine's host gives one evaluation: written
    when it starts, ``seen_at`` moved by its heartbeat, removed when it stops (``capacity``)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    cpus: Mapped[int]
    memory_mb: Mapped[int]
    gpu: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StatusChange(Base):
    """One timestamped transition of an evaluation (written by ``lifecycle.transition``)."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"), index=True)
    from_state: Mapped[State | None] = mapped_column(_enum(State, "state"))
    to_state: Mapped[State] = mapped_column(_enum(State, "state"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(Text)

    evaluation: Mapped[Evaluation] = relationship(back_populates="history")


class LeaderboardEntry(Base):
    """Each team's best-scoring submission in a phase (its latest successful evaluation),
    kept up to date when an evaluation succeeds, so the leaderboard reads one row per team."""

    __tablename__ = "leaderboard_entries"
    __table_args__ = (UniqueConstraint("phase_id", "team_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"))
    score: Mapped[float | None] = mapped_column(Float)


class CaseResult(Base):
    """The evaluator's per-case values of one evaluation, unchanged."""

    __tablename__ = "case_results"
    __table_args__ = (UniqueConstraint("evaluation_id", "case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"))
    case_id: Mapped[str] = mapped_column(String(128))
    values: Mapped[dict] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    evaluation: Mapped[Evaluation] = relationship(back_populates="cases")


class ApiToken(Base):
    """An API token, stored as its sha256; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship()


class Invitation(Base):
    """An invitation to join a team sent to one e-mail address: only the sha256 of its
    token is kept; it is used once, by a user registered with that address, before
    ``expires_at``."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    used_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    team: Mapped[Team] = relationship()


class AuditEntry(Base):
    """Who did what, append-only: rows are never updated or deleted (refused below)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict | None] = mapped_column(JSON)


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _append_only(mapper, connection, target):
    raise PermissionError("the audit log is append-only: its entries are never changed or deleted")
