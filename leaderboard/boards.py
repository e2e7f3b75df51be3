"""The ranked leaderboard of a phase, kept per app and shared by API v1, the pages and
the organizers' CSV/JSON export.

Ranking a phase (``iugc.submissions.reports.leaderboard``, ``iugc.evaluator.ranking``) costs
milliseconds per call; the result depends only on the phase's leaderboard entries (each
team's name and ranked evaluation: a new scored submission, a disqualification or a
reinstatement moves an entry, and moves the phase's ``board_version`` with it), the
ranking method and the publish state. :func:`state` reads those and the phase's
visibility from the phase's row; :func:`ranked` recomputes only when the key changes, and
anything derived from the rows (the API's JSON, the page's table) is kept under the same
key with :func:`kept`. Who may see a phase is checked on every call, never cached.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from flask import current_app
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from iugc.submissions import challenges, reports
from iugc.submissions.exceptions import Forbidden
from iugc.submissions.models import Phase, Role, User

KEPT = 256
"""Entries kept per app (rows, JSON, tables, charts of every phase and method); the least
recently used go first."""


class Kept:
    """A small thread-safe LRU mapping; ``computed`` counts the values it had to compute."""

    def __init__(self, size: int = KEPT):
        self.size, self.computed = size, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key):
        """The value kept under ``key`` (None when none is)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self.computed += 1
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key, compute: Callable):
        """The value kept under ``key``, or ``compute()`` kept there (values are never None)."""
        value = self.peek(key)
        if value is not None:
            return value
        value = compute()  # outside the lock: two threads may both compute a new key once
        self.put(key, value)
        return value


def store() -> Kept:
    """The app's store (one per app)."""
    return current_app.extensions.setdefault("iugc_boards", Kept())


ANONYMOUS = User(id=0, email="", role=Role.participant)
"""Stands for an anonymous visitor where ``reports`` asks for a viewer (never stored): a
visitor sees what a participant sees."""


@dataclass(frozen=True)
class Board:
    """A phase's leaderboard as of now, read from the phase's row: who may see it
    (``kind``, ``results_published``, as ``reports.results_hidden`` reads a phase) and
    ``key``, what its ranked rows depend on."""

    id: int
    slug: str
    kind: str
    results_published: bool
    method: str | None
    key: tuple


_STATE = (select(Phase.id, Phase.kind, Phase.results_published, Phase.board_version)  # built once: building costs more than running
          .where(Phase.slug == bindparam("slug")))


def state(session: Session, slug: str, method: str | None = None) -> Board:
    """The phase ``slug`` and its key: the method, the publish state and the phase's
    ``board_version`` (moved by every change of its entries). NotFound for no phase."""
    board = find(session, slug, method)
    if board is None:
        challenges.phase_by_slug(session, slug)  # raises its NotFound, naming the phases there are
    return board


def find(connection, slug: str, method: str | None = None) -> Board | None:
    """:func:`state`, or None for no phase ``slug``; one row read through ``connection``
    (a Session or a Core connection)."""
    row = connection.execute(_STATE, {"slug": slug}).first()
    if row is None:
        return None
    phase_id, kind, published, version = row
    return Board(phase_id, slug, kind, published, method, (phase_id, method, published, version))


def ranked(session: Session, user: User, board: Board) -> dict:
    """``reports.leaderboard``'s dict for ``user``, kept under the board's key; raises what
    ``reports.leaderboard`` raises (Forbidden, InvalidRequest)."""
    if reports.results_hidden(board, user):
        raise Forbidden(f"the results of {board.slug} are not published yet")
    return kept(("rows",) + board.key, lambda: reports.leaderboard(session, user, board.slug, board.method))


def kept(full_key: tuple, compute: Callable):
    """``compute()`` kept under ``full_key`` (start it with a label, then a :func:`key`)."""
    return store().get(full_key, compute)
