"""API v1 (the ``api`` blueprint, under ``/api/v1``): JSON in and out, bearer tokens.

Every view is declared with :func:`endpoint`, which records its summary, parameters,
request body and responses; ``GET /api/v1/openapi.json`` is built from those records and
Flask's URL map (``iugc.leaderboard.openapi``), so the document cannot drift from the code.
Errors are ``{"error": message}`` with the status of the ``iugc.submissions.exceptions`` class
(``iugc.leaderboard.errors``).
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging

from flask import Blueprint, Response, current_app, g, jsonify, request

from iugc.submissions import accounts, challenges, counting, db, queue, reports, teams
from iugc.submissions.exceptions import InvalidRequest, RateLimited
from iugc.submissions.uploads import submit
from iugc.leaderboard import boards
from iugc.leaderboard.rates import WindowCounters
from iugc.leaderboard.web.security import limiter
from iugc.leaderboard.app import service

api = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger("iugc.api")

ENDPOINTS: dict[str, dict] = {}
"""view name -> its OpenAPI description, filled by :func:`endpoint`."""

ERROR = {"$ref": "#/components/schemas/Error"}


def endpoint(rule: str, method: str, summary: str, *, auth: bool = True, body: dict | None = None,
             responses: dict[int, str], status: int = 200, rates: tuple[str, ...] = ("API_RATE_LIMIT",),
             reads: bool = False):
    """Register a view on the blueprint with what OpenAPI says about it.

    ``rates``: the app config entries whose per-token rates an authenticated call counts
    against (checked after the token, before the view: a refused call changes nothing).
    ``reads``: the view only reads; it is called with the read session that authenticated
    the caller as its first argument (one session per call, not two).
    """
    def decorate(view):
        @functools.wraps(view)
        def wrapper(**kwargs):
            if not auth:
                return answer(view(**kwargs))
            token = _bearer()
            with service().read_sessions() as session:
                g.user = accounts.authenticate(session, token)
                for rate in rates:
                    count_rate(rate, hashlib.sha256(token.encode()).hexdigest())
                if reads:
                    return answer(view(session, **kwargs))
            return answer(view(**kwargs))

        def answer(result):
            return (result if isinstance(result, Response) else jsonify(result)), status

        errors = {401: "no valid token", 429: "over the token's rate limit (with retry_after)"} if auth else {}
        ENDPOINTS[view.__name__] = {"summary": summary, "description": (view.__doc__ or "").strip(), "auth": auth,
                                    "body": body, "status": status, "responses": {**responses, **errors}, "rates": rates}
        api.add_url_rule(rule, view.__name__, wrapper, methods=[method])
        return wrapper
    return decorate


def _bearer() -> str | None:
    return bearer_token(request.headers.get("Authorization", ""))


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None for any other.

    >>> bearer_token("Bearer iugc_abc "), bearer_token("Basic eDp5"), bearer_token("Bearer ")
    ('iugc_abc', None, None)
    """
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def count_rate(config_name: str, token_sha256: str) -> None:
    """Count one call of this token against the app's ``config_name`` rate; RateLimited
    (with when it frees) when over. The counters: :func:`_counters`."""
    from redis.exceptions import RedisError

    item = _rate(current_app.config[config_name])
    strategy = _counters()
    try:
        if strategy.hit(item, "iugc-api", config_name, token_sha256):
            return
    except RedisError as exc:  # the shared counters are away (a Redis restart): serve rather than fail every call
        log.warning("API rate limit not checked: its Redis storage is unreachable (%s)", exc)
        return
    reset_at = dt.datetime.fromtimestamp(strategy.get_window_stats(item, "iugc-api", config_name, token_sha256).reset_time, dt.timezone.utc)
    what = "uploads" if config_name == "API_UPLOAD_RATE_LIMIT" else "requests"
    raise RateLimited(f"too many {what}: this token may make {item.amount} per {item.multiples} {item.GRANULARITY.name}; "
                      f"the next is allowed at {reset_at:%Y-%m-%d %H:%M:%S} UTC (see Retry-After)", retry_after=reset_at)


@functools.lru_cache(maxsize=16)
def _rate(text: str):
    from limits import parse

    return parse(text)


def _counters():
    """Redis: Flask-Limiter's strategy on its Redis storage (shared by every process);
    memory: one :class:`iugc.leaderboard.rates.WindowCounters` per app."""
    if current_app.config["RATELIMIT_STORAGE_URI"].startswith("memory"):
        return current_app.extensions.setdefault("iugc_api_rates", WindowCounters())
    return limiter.limiter


MAX_FIELD_CHARS = 1000


def json_body(required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict[str, str]:
    """The request's JSON object, every field a string: one InvalidRequest (400) naming the
    first field at fault otherwise (not an object, an unknown or missing field, a value that
    is not a string or is too long). Every API v1 body is read through here."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object such as {\"" + "\": \"...\", \"".join(required or optional)
                             + "\": \"...\"} with Content-Type: application/json")
    accepted = (*required, *optional)
    unknown = [name for name in data if name not in accepted]
    if unknown:
        raise InvalidRequest(f"unknown field {ascii(unknown[0])[:60]}; this endpoint takes {', '.join(accepted)}", field=unknown[0][:60])
    for name in required:
        if name not in data:
            raise InvalidRequest(f"the field {name!r} is missing", field=name)
    for name, value in data.items():
        if not isinstance(value, str):
            kind = "null" if value is None else {bool: "a boolean", int: "a number", float: "a number", list: "a list",
                                                 dict: "an object"}.get(type(value), "another type")
            raise InvalidRequest(f"the field {name!r} must be a string, got {kind}", field=name)
        if len(value) > MAX_FIELD_CHARS:
            raise InvalidRequest(f"the field {name!r} is {len(value)} characters long; at most {MAX_FIELD_CHARS}", field=name)
    return data


@endpoint("/openapi.json", "GET", "This document: every endpoint of API v1 (OpenAPI 3)", auth=False, responses={200: "the document"})
def openapi_document():
    from iugc.leaderboard.openapi import build

    return build(current_app)


@endpoint("/phases", "GET", "Phases with their windows, limits and the caller's team quota", responses={200: "a list of phases"})
def list_phases():
    with service().sessions() as session:
        return reports.phases(session, g.user)


@endpoint("/teams", "POST", "Create a team with the caller as its first member", status=201,
          body={"name": {"type": "string"}, "challenge": {"type": "string", "description": "needed when several challenges exist"}},
          responses={201: "the team", 400: "malformed body", 409: "name taken or already in a team"})
def create_team():
    data = json_body(required=("name",), optional=("challenge",))
    with db.transaction(service().sessions) as session:
        user = session.merge(g.user)
        team = teams.create_team(session, user, data["name"], data.get("challenge"))
        return {"id": team.id, "name": team.name, "challenge": team.challenge.name}


@endpoint("/challenges/<name>/terms", "POST", "Accept the challenge's terms for the caller's team (once, before its first "
          "submission; read them at /challenges/NAME/terms on the site)",
          responses={200: "accepted (when, by whom)", 403: "not in a team of this challenge", 404: "no such challenge, or it has no terms"})
def accept_terms(name):
    with db.transaction(service().sessions) as session:
        team = teams.accept_terms(session, session.merge(g.user), challenges.challenge_by_name(session, name).id)
        return {"team": team.name, "challenge": name, "accepted": team.terms_accepted_at.isoformat()}


@endpoint("/teams/join", "POST", "Join a team with its invitation: the token of a team's link or of an e-mail invitation",
          body={"invitation": {"type": "string", "description": "the last part of /teams/join/TOKEN or /teams/invitations/TOKEN"}},
          responses={200: "the team joined", 400: "malformed body, or an invitation that is expired or used",
                     403: "an e-mail invitation sent to another address", 404: "no such invitation or team",
                     409: "already in a team of that challenge"})
def join_team():
    token = json_body(required=("invitation",))["invitation"].strip()
    with db.transaction(service().sessions) as session:
        team = teams.join_by_invitation(session, session.merge(g.user), current_app.secret_key, token)
        return {"id": team.id, "name": team.name, "challenge": team.challenge.name}


@endpoint("/teams/<int:team_id>/leave", "POST", "Leave a team (its submissions stay the team's)",
          responses={200: "left", 404: "not a member of this team"})
def leave_team(team_id):
    with db.transaction(service().sessions) as session:
        teams.leave_team(session, g.user, team_id)
    return {"id": team_id, "left": True}


@endpoint("/phases/<slug>/submissions", "POST", "Upload a `docker save` archive (multipart field `image`)", status=202,
          body={"image": {"type": "string", "format": "binary"}},
          responses={202: "accepted: {id, status}", 400: "no image field", 403: "phase closed or not in a team", 404: "no such phase",
                     409: "the same archive again", 413: "over the phase's size limit", 422: "the archive breaks an intake rule",
                     429: "over quota (with retry_after)",
                     503: "no running worker can evaluate the phase (the message says what is missing)"}, rates=("API_RATE_LIMIT", "API_UPLOAD_RATE_LIMIT"))
def create_submission(slug):
    upload = request.files.get("image")
    if upload is None:
        raise InvalidRequest("send the archive as the multipart form field `image` (`docker save IMAGE -o FILE.tar`)")
    ctx = service()
    submission_id = submit(ctx.sessions, ctx.storage, g.user.id, slug, upload.stream)
    ctx.wake()
    return {"id": submission_id, "status": "queued"}


@endpoint("/submissions/<int:submission_id>", "GET", "Status, timestamps, failure reason, aggregates and score",
          responses={200: "the submission", 404: "no such submission visible to the caller"})
def get_submission(submission_id):
    with service().sessions() as session:
        return reports.submission_status(session, g.user, submission_id)


@endpoint("/submissions/<int:submission_id>/cases", "GET", "Per-case values where the phase shows them",
          responses={200: "per-case values", 403: "this phase does not show them", 404: "no such submission visible to the caller"})
def get_submission_cases(submission_id):
    with service().sessions() as session:
        return reports.submission_cases(session, g.user, submission_id)


@endpoint("/submissions/<int:submission_id>/cancel", "POST", "Cancel a received, queued or running submission",
          responses={200: "cancelled", 400: "already finished", 404: "no such submission visible to the caller"})
def cancel_submission(submission_id):
    state = queue.cancel(service().sessions, g.user.id, submission_id)
    return {"id": submission_id, "status": state.value}


@endpoint("/submissions/<int:submission_id>/description", "POST", "Set the method description shown on the leaderboard row",
          body={"description": {"type": "string", "description": "one line, at most 200 characters; empty: none"},
                "url": {"type": "string", "description": "optional http(s) link to a write-up"}},
          responses={200: "saved", 400: "too long, a link that is not http(s), or a link without a description",
                     403: "organizers do not describe teams' submissions", 404: "no such submission of the caller's team"})
def describe_submission(submission_id):
    data = json_body(required=("description",), optional=("url",))
    with db.transaction(service().sessions) as session:
        counting.describe(session, session.merge(g.user), submission_id, data["description"], data.get("url", ""))
    return {"id": submission_id, "saved": True}


@endpoint("/submissions/<int:submission_id>/choose", "POST", "Make this scored submission the one that counts for the team",
          responses={200: "it counts", 400: "not scored, or disqualified", 403: "organizers do not choose for teams",
                     404: "no such submission of the caller's team"})
def choose_submission(submission_id):
    with db.transaction(service().sessions) as session:
        counting.choose(session, session.merge(g.user), submission_id)
    return {"id": submission_id, "counts": True}


@endpoint("/submissions/<int:submission_id>/unchoose", "POST", "Clear the team's choice: the phase's rule (its best or its latest scored submission) counts again",
          responses={200: "the phase's rule counts", 403: "organizers do not choose for teams", 404: "no such submission of the caller's team"})
def unchoose_submission(submission_id):
    with db.transaction(service().sessions) as session:
        counting.unchoose(session, session.merge(g.user), submission_id)
    return {"id": submission_id, "counts": False}


@endpoint("/phases/<slug>/leaderboard", "GET", "Ranked rows: team, submission, rank, score and every metric",
          responses={200: "{rows: [...]}", 403: "final results not published yet", 404: "no such phase"}, reads=True)
def get_leaderboard(session, slug):
    """The rows are ranked once per change of the phase's entries (``iugc.leaderboard.boards``)."""
    board = boards.state(session, slug)
    data = boards.ranked(session, g.user, board)
    body = boards.kept(("api-json",) + board.key, lambda: current_app.json.dumps(data) + "\n")
    return Response(body, mimetype="application/json")
