"""The audit log: every change an organizer or a participant makes to the records writes one
entry (who, what, on what, the details), in the same transaction as the change."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iugc.submissions.models import AuditEntry, User


def audit(session: Session, actor_id: int | None, action: str, target: str | None = None, **detail) -> None:
    """Add an entry to the caller's transaction (written with the change it records, or not at all)."""
    session.add(AuditEntry(actor_id=actor_id, action=action, target=target, detail=detail or None))


def latest(session: Session, limit: int) -> list[tuple[AuditEntry, str | None]]:
    """The newest ``limit`` entries, newest first, each with its actor's e-mail (None: a command)."""
    return session.execute(select(AuditEntry, User.email).outerjoin(User, AuditEntry.actor_id == User.id)
                           .order_by(AuditEntry.id.desc()).limit(limit)).all()
