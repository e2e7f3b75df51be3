"""Kept answers to the two most asked reads, served in front of Flask.

A published phase's leaderboard page is the same for every visitor who is not logged in
(no cookie), and API v1's leaderboard is the same for every caller allowed to see it;
both change only when the phase's board does (``iugc.leaderboard.boards``). :class:`KeptAnswers`
wraps the app's WSGI callable. Such a request reads the board's key (and, for the API,
its caller's role by the token, in the same read-only transaction, on a plain database
connection: an ORM session cost twice as much per request) and, when an answer is kept under the key,
gets its bytes; otherwise it goes through the app (its views, templates and checks), and
the app's answer is kept if it is a 200 that sets no cookie. An API call is counted
against its token's rate before a kept answer is sent, as the app counts it; a call the
app must answer (no valid token, over the rate, a hidden phase) goes to the app uncounted
here. Every other request goes to the app unchanged. This is the micro-cache a reverse
proxy would keep, in the process, with the app's own checks in front of it.
"""
from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs

from iugc.submissions import accounts, db, reports
from iugc.submissions.exceptions import RateLimited
from iugc.submissions.models import Role
from iugc.leaderboard import boards
from iugc.leaderboard.api import ENDPOINTS, bearer_token, count_rate

_SLUG = r"([A-Za-z0-9][A-Za-z0-9_.-]*)"
_PAGE = re.compile(rf"/leaderboard/{_SLUG}")
_API = re.compile(rf"/api/v1/phases/{_SLUG}/leaderboard")


class KeptAnswers:
    """WSGI middleware (``app.wsgi_app = KeptAnswers(app)``); ``kept``: its LRU store."""

    def __init__(self, app):
        self.app, self.wsgi_app, self.kept = app, app.wsgi_app, boards.Kept()
        self._reads = db.read_only(app.extensions["iugc"].engine)

    def __call__(self, environ, start_response):
        key, token = self._key(environ)
        found = self.kept.peek(key) if key is not None else None
        if found is None:
            return self.wsgi_app(environ, start_response) if key is None else self._through(environ, start_response, key)
        if token is not None and not self._counted(token):
            return self.wsgi_app(environ, start_response)  # over the rate: the app says so (a refused call counts nothing)
        status, headers, body = found
        start_response(status, headers)
        return [body]

    def _key(self, environ) -> tuple[tuple | None, str | None]:
        """(the key of a kept answer this request may get, the API caller's token), or (None, None)."""
        if environ.get("REQUEST_METHOD") != "GET":
            return None, None
        path = environ.get("PATH_INFO", "")
        if (page := _PAGE.fullmatch(path)) and not environ.get("HTTP_COOKIE") and not environ.get("HTTP_AUTHORIZATION"):
            method = (parse_qs(environ.get("QUERY_STRING", "")).get("method") or [""])[0] or None  # as the view reads it
            with self._reads.connect() as connection:
                board = boards.find(connection, page.group(1), method)
            shown = board is not None and not reports.hidden_from(board, Role.participant)  # as the view decides for a visitor
            return (("page",) + board.key if shown else None), None
        if api := _API.fullmatch(path):
            token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
            if token is None:
                return None, None
            with self._reads.connect() as connection:
                role = accounts.caller_role(connection, token)
                board = boards.find(connection, api.group(1)) if role is not None else None
            if board is None or reports.hidden_from(board, role):
                return None, None  # the app answers (401, 404, 403) as it would
            return ("api",) + board.key, token
        return None, None

    def _counted(self, token: str) -> bool:
        """Count the call against the token's rates as the app would; False when over."""
        with self.app.app_context():
            try:
                for rate in ENDPOINTS["get_leaderboard"]["rates"]:
                    count_rate(rate, hashlib.sha256(token.encode()).hexdigest())
            except RateLimited:
                return False
        return True

    def _through(self, environ, start_response, key: tuple):
        answer = {}

        def capture(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)
            return start_response(status, headers, exc_info)

        chunks = self.wsgi_app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if answer.get("status", "").startswith("200 ") and not any(k.lower() == "set-cookie" for k, _ in answer["headers"]):
            self.kept.put(key, (answer["status"], answer["headers"], body))
        return [body]
