"""The ranked leaderboard of a phase, kept per app and shared by API v1, the pages and
the organizers' CSV/JSON export.

Ranking a phase (``submissions.reports.leaderboard``, ``evaluator.ranking``) costs
milliseconds per call; the result depends only on the phase's leaderboard entries (each
team's name and ranked evaluation: a new scored submission, a disqualification or a
reinstatement moves an entry), the ranking method and the publish state. :func:`key`
reads those in one query; :func:`ranked` recomputes only when the key changes, and
anything derived from the rows (the API's JSON, the page's table) is kept under the same
key with :func:`kept`. Who may see a phase is checked on every call, never cached.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Callable

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from submissions import reports
from submissions.models import LeaderboardEntry, Phase, Team, User

KEPT = 256
"""Entries kept per app (rows, JSON, tables, charts of every phase and method); the least
recently used go first."""


class Kept:
    """A small thread-safe LRU mapping; ``computed`` counts the values it had to compute."""

    def __init__(self, size: int = KEPT):
        self.size, self.computed = size, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, compute: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()  # outside the lock: two threads may both compute a new key once
        with self._lock:
            self._items[key] = value
            self.computed += 1
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def store() -> Kept:
    """The app's store (one per app)."""
    return current_app.extensions.setdefault("iugc_boards", Kept())


def key(session: Session, phase: Phase, method: str | None) -> tuple:
    """What the ranked rows of ``phase`` depend on: the method, the publish state and each
    entry's team id, team name and evaluation id (a succeeded evaluation never changes),
    the entries as one sha256 (a short key is cheap to look up on every request)."""
    entries = session.execute(
        select(LeaderboardEntry.team_id, Team.name, LeaderboardEntry.evaluation_id)
        .join(Team, Team.id == LeaderboardEntry.team_id)
        .where(LeaderboardEntry.phase_id == phase.id).order_by(LeaderboardEntry.team_id)).all()
    digest = hashlib.sha256(json.dumps([tuple(e) for e in entries]).encode()).hexdigest()
    return (phase.id, method, phase.results_published, digest)


def ranked(session: Session, user: User, phase: Phase, method: str | None = None) -> tuple[Phase, dict, tuple]:
    """(phase, ``reports.leaderboard``'s dict, its key) for ``user``; raises what
    ``reports.leaderboard`` raises (Forbidden, InvalidRequest)."""
    if reports.results_hidden(phase, user):
        reports.leaderboard(session, user, phase.slug, method)  # raises its Forbidden
    board_key = key(session, phase, method)
    data = kept(("rows",) + board_key, lambda: reports.leaderboard(session, user, phase.slug, method))
    return phase, data, board_key


def kept(full_key: tuple, compute: Callable):
    """``compute()`` kept under ``full_key`` (start it with a label, then a :func:`key`)."""
    return store().get(full_key, compute)
