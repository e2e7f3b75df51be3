"""No page a team or a visitor can open shows a Python exception's text.

The site is seeded with what produces such text inside the platform: an evaluation whose
worker crashed with an exception on every attempt (the exception's name and message are
in the organizer's history), an image that failed, a queued and a cancelled submission,
junk uploads through the form and the API. Then every GET page open to a visitor or a
participant is fetched with real and with wrong parameters (unknown ids, odd strings),
and each answer must be below 500 and free of a traceback, an exception class name or a
library's module path."""
from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from iugc.leaderboard.web.security import ACCESS
from iugc.submissions import queue
from iugc.submissions.models import CaseResult, Evaluation, State
from iugc.submissions.worker import WorkerPool
from tests.web_support import ORGANIZER, SANITY, VALIDATION, site  # noqa: F401 (a fixture)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")

EXCEPTION_TEXT = re.compile(r"Traceback|File \"/|\b[A-Z]\w*(Error|Exception)\b|sqlalchemy|psycopg|werkzeug\.|jinja2\.|"
                            r"<module>|secret-marker")
CRASH = "the engine said secret-marker"


def _crash(job):
    raise RuntimeError(CRASH)


def _seed(site) -> dict:
    site.person("a@example.org", "alpha")
    scored = site.submission("a@example.org", SANITY, {"dice": 0.9, "dice_ps": 0.85, "dice_fh": 0.93, "dice_all": 0.92, "hd": 10.0,
                                                       "asd": 3.0, "aop_error": 6.0, "n_cases": 1},
                             cases={"00001": {"dice_all": 0.9, "error": None}})
    failed = site.submission("a@example.org", SANITY)
    job = queue.claim_next(site.sessions, "test:1:x")
    queue.finish(site.sessions, job, {"status": "failed", "failure": "invalid_outputs", "error": "no predictions.json in /output"})
    crashed = site.submission("a@example.org", VALIDATION)
    pool = WorkerPool(site.sessions, site.storage, threads=1, evaluate=_crash, poll_seconds=0.02, max_attempts=2, cleanup=False).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with site.sessions() as session:
                status = session.execute(select(Evaluation.status).where(Evaluation.submission_id == crashed)).scalar()
            if status == State.failed:
                break
            time.sleep(0.05)
    finally:
        pool.stop(1)
    assert status == State.failed
    queued = site.submission("a@example.org", SANITY)
    cancelled = site.submission("a@example.org", VALIDATION)
    team = site.client("a@example.org")
    team.form(f"/submissions/{cancelled}/cancel", page=f"/submissions/{cancelled}")
    with site.sessions() as session:
        case_id = session.execute(select(CaseResult.case_id)).scalars().first()
        assert CRASH in " ".join(c.note or "" for e in session.execute(select(Evaluation)).scalars() for c in e.history)
    return {"scored": scored, "failed": failed, "crashed": crashed, "queued": queued, "cancelled": cancelled, "case_id": case_id}


def _values(seeded: dict) -> dict[str, list[str]]:
    odd = ["0", "999999", "..", "%3Cscript%3E", "x" * 300, "%00", "%C3%A9t%C3%A9"]
    return {
        "submission_id": [str(seeded[k]) for k in ("scored", "failed", "crashed", "queued", "cancelled")] + ["0", "999999"],
        "slug": [SANITY, VALIDATION] + odd, "name": ["svc"] + odd, "challenge": ["svc"] + odd,
        "case_id": [seeded["case_id"]] + odd, "token": odd,
    }


def _urls(app, values: dict, access: set[str]) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or ACCESS.get(rule.endpoint) not in access:
            continue
        paths = [rule.rule]
        for argument in rule.arguments:
            paths = [re.sub(rf"<(?:\w+:)?{argument}>", value, p) for p in paths for value in values[argument]]
        urls += paths
    return urls


def _clean(response, url: str) -> None:
    assert response.status_code < 500, (url, response.status_code)
    if response.mimetype in ("text/html", "application/json", "text/plain", "text/csv", "image/svg+xml"):
        body = response.get_data(as_text=True)
        found = EXCEPTION_TEXT.search(body)
        assert found is None, (url, body[max(0, found.start() - 200):found.end() + 200])


def test_no_page_a_team_or_a_visitor_opens_shows_exception_text(site):
    seeded = _seed(site)
    values = _values(seeded)
    team, visitor = site.client("a@example.org"), site.client()
    junk = team.http.post(f"/phases/{SANITY}/upload", data={"image": (open(__file__, "rb"), "image.tar"),
                                                           "csrf_token": team.token(f"/phases/{SANITY}/upload")},
                          content_type="multipart/form-data", headers={"Accept": "application/json"})
    _clean(junk, "upload of a Python file")
    assert junk.status_code == 422 and "docker save" in junk.get_data(as_text=True)
    urls = _urls(site.app, values, {"public", "user"})
    assert len(urls) > 100
    for url in urls:
        _clean(team.get(url), url)
    for url in _urls(site.app, values, {"public"}):
        _clean(visitor.get(url), url)
    status = team.get(f"/submissions/{seeded['crashed']}").get_data(as_text=True)
    assert "platform_error" in status and "does not count against your quota" in status  # what the team reads instead
    organizer = site.client(ORGANIZER).get(f"/submissions/{seeded['crashed']}").get_data(as_text=True)
    assert "RuntimeError" in organizer and "secret-marker" in organizer  # the organizer does see what happened


JUNK = ["", "x" * 5000, "\x00", "<script>alert(1)</script>", "-1", "9" * 30, "nan", "2026-13-45T99:99", "../../etc/passwd"]


def _counts(site) -> dict:
    from sqlalchemy import func

    from iugc.submissions.models import ApiToken, AuditEntry, Membership, Submission, Team, User

    with site.sessions() as session:
        return {m.__tablename__: session.execute(select(func.count()).select_from(m)).scalar()
                for m in (User, Team, Membership, Submission, Evaluation, ApiToken, AuditEntry)}


@pytest.fixture
def unlimited(tmp_path):
    """A site with rate limits out of the way: the test posts to the log-in and registration forms many times."""
    from tests.web_support import Site

    many = "100000 per minute"  # (not RATELIMIT_ENABLED=False: that switches off the one shared limiter for later apps too)
    made = Site(tmp_path, RATE_LIMIT_LOGIN=many, RATE_LIMIT_REGISTER=many, RATE_LIMIT_UPLOAD=many)
    yield made
    made.close()


def test_every_form_refuses_a_post_from_elsewhere_and_answers_junk_without_exception_text(unlimited):
    """Each POST page of the site: without the session's CSRF token it answers 400 and
    changes nothing; with junk in every field it answers below 500 with no exception text."""
    site = unlimited
    seeded = _seed(site)
    values = _values(seeded)
    values.update(team_id=["1", "999999"], token_id=["1", "999999"], invitation_id=["1", "999999"],
                  submission_id=[str(seeded["scored"]), "999999"])
    posts = []
    for rule in site.app.url_map.iter_rules():
        if "POST" in rule.methods and not rule.endpoint.startswith("api.") and rule.rule != "/logout":  # (tested apart)
            paths = [rule.rule]
            for argument in rule.arguments:
                paths = [re.sub(rf"<(?:\w+:)?{argument}>", value, p) for p in paths for value in values[argument][:2]]
            posts += paths
    assert len(posts) > 40
    fields = ["email", "password", "confirm", "name", "reason", "description", "url", "opens", "closes", "per_day", "total",
              "path", "sha256", "submission", "phase", "counts", "invitation", "current", "new", "label"]
    for who in ("a@example.org", ORGANIZER):
        client = site.client(who)
        for url in posts:
            before = _counts(site)
            forged = client.post(url, data={f: "x" for f in fields})
            assert forged.status_code == 400, (who, url, forged.status_code)
            assert _counts(site) == before, (who, url)
            _clean(forged, url)
            token = client.token("/account")
            for junk in JUNK:
                _clean(client.post(url, data={**{f: junk for f in fields}, "csrf_token": token}), f"{who} {url} {junk[:20]!r}")
