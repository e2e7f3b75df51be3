"""The audit log: every change an organizer or a participant makes to the records writes one
entry (who, what, on what, the details), in the same transaction as the change."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iugc.submissions.models import AuditEntry, User


def audit(session: Session, actor_id: int | None, action: str, target: str | None = None, **detail) -> None:
    """Add an entry to the caller's transaction (written with the change it records, or not at all)."""
    session.add(AuditEntry(actor_id=actor_id, action=action, target=target, detail=detail or None))


def latest(session: Session, limit: int | None, action: str = "", actor: str = "") -> list[tuple[AuditEntry, str | None]]:
    """The newest ``limit`` entries (None: all), newest first, each with its actor's e-mail
    (None: a command). ``action``: only actions starting with it (``submission`` matches
    ``submission.create`` and ``submission.cancel``); ``actor``: only e-mails containing it,
    or ``system`` for the commands'."""
    query = select(AuditEntry, User.email).outerjoin(User, AuditEntry.actor_id == User.id)
    if action:
        query = query.where(AuditEntry.action.startswith(action.strip(), autoescape=True))
    if actor.strip().lower() == "system":
        query = query.where(AuditEntry.actor_id.is_(None))
    elif actor:
        query = query.where(User.email.contains(actor.strip().lower(), autoescape=True))
    return session.execute(query.order_by(AuditEntry.id.desc()).limit(limit)).all()


def readable(detail: dict | None) -> list[tuple[str, str]]:
    """An entry's detail as (name, value) pairs a person reads: text as it is, lists and
    mappings as compact JSON with their characters unescaped.

    >>> readable({"reason": "copied <b>code</b>", "n_cases": 20, "before": {"quota": 5}})
    [('reason', 'copied <b>code</b>'), ('n_cases', '20'), ('before', '{"quota": 5}')]
    """
    import json

    return [(name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            for name, value in (detail or {}).items()]
