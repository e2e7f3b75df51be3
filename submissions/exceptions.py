"""Errors of the submission service, named by what the caller (an API, a command) does.

Each message is one line saying what was wrong and what to do next, safe to show the
person who caused it (never a storage path, a host name or anything of the ground truth).
Each class carries the HTTP status ``leaderboard/`` answers with (``status``); the commands
print the message.
"""
from __future__ import annotations


class ServiceError(Exception):
    """Base class of the errors below; one raised as itself is a server fault (HTTP 500)."""

    status = 500


class ConfigurationError(ServiceError):
    """The service is not set up to do this (an unmigrated database, a bad URL) (HTTP 503)."""

    status = 503


class SchemaNotCurrent(ConfigurationError):
    """The database has no schema or an older one: run ``iugc db upgrade``."""


class InvalidRequest(ServiceError):
    """The request or an uploaded archive is malformed (HTTP 400). ``field``, when given,
    names the input at fault (a form shows the message under it; API v1 returns it)."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class InvalidArchive(InvalidRequest):
    """An uploaded archive breaks an intake rule (HTTP 422); the message names the rule."""

    status = 422


class NotAuthenticated(ServiceError):
    """No valid credentials (HTTP 401)."""

    status = 401


class Forbidden(ServiceError):
    """Authenticated, but this is another team's or an organizer's business (HTTP 403)."""

    status = 403


class NotFound(ServiceError):
    """It does not exist or is not visible to the caller (HTTP 404)."""

    status = 404


class Conflict(ServiceError):
    """A duplicate (the same archive twice, a team name taken) (HTTP 409)."""

    status = 409


class TooLarge(ServiceError):
    """An upload over the phase's size limit (HTTP 413)."""

    status = 413


class QuotaExceeded(ServiceError):
    """Over a quota; ``retry_after`` says when it frees up (HTTP 429)."""

    status = 429

    def __init__(self, message: str, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(QuotaExceeded):
    """Over the API's per-token request rate; ``retry_after`` says when (HTTP 429)."""


class Unavailable(ServiceError):
    """The platform cannot do this now, through no fault of the caller: no running worker
    can evaluate the phase (HTTP 503); the message says what is missing."""

    status = 503


class IllegalTransition(ServiceError):
    """A lifecycle change the state machine does not allow (a bug or a race lost)."""
