"""The web app's guards through Flask's test client (CSRF on, as in production): the
secret-key rule, argon2 accounts, cookie flags, access levels on every route (anonymous,
participant, participant of another team, organizer), CSRF refusals, rate limits, a
forged session cookie and an open redirect."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select

from iugc.leaderboard.app import create_app
from iugc.leaderboard.web.security import ACCESS, write_secret_key
from iugc.submissions import accounts, challenges, db
from iugc.submissions.exceptions import ConfigurationError
from iugc.submissions.models import Membership, Submission, Team, User
from tests.web_support import ORGANIZER, PASSWORD, SANITY, Site, site  # noqa: F401 (the site fixture)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")


def _env(monkeypatch, tmp_path, site):
    monkeypatch.setenv("IUGC_INSTANCE", str(tmp_path / "inst"))
    monkeypatch.setenv("IUGC_DATABASE_URL", f"sqlite:///{tmp_path / 'web.sqlite3'}")
    monkeypatch.setenv("IUGC_STORAGE_URL", str(site.storage.root))
    monkeypatch.delenv("IUGC_SECRET_KEY", raising=False)


def test_the_app_refuses_to_start_without_a_secret_key_and_says_how_to_set_one(site, tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path, site)
    with pytest.raises(ConfigurationError, match=r"no secret key: set IUGC_SECRET_KEY .* or write one into .*inst/secret_key"):
        create_app()
    monkeypatch.setenv("IUGC_SECRET_KEY", "short")
    with pytest.raises(ConfigurationError, match="5 characters; use at least 32"):
        create_app()
    monkeypatch.setenv("IUGC_SECRET_KEY", "x" * 40)
    assert create_app().secret_key == "x" * 40
    monkeypatch.delenv("IUGC_SECRET_KEY")
    path = write_secret_key(tmp_path / "inst")
    assert path.stat().st_mode & 0o077 == 0  # not readable by others
    key = path.read_text().strip()
    assert create_app().secret_key == key and len(key) == 64
    assert write_secret_key(tmp_path / "inst").read_text().strip() == key  # kept, not replaced


def test_iugc_serve_stops_with_the_secret_key_message(site, tmp_path, monkeypatch):
    from iugc.leaderboard.cli import serve_cmd

    _env(monkeypatch, tmp_path, site)
    result = CliRunner().invoke(serve_cmd, ["--port", "0"])
    assert result.exit_code == 1 and "no secret key: set IUGC_SECRET_KEY" in result.output


def test_registration_stores_an_argon2_hash_and_logs_in_with_secure_cookie_flags(site):
    client = site.client()
    response = client.form("/register", {"email": "New@Example.org", "password": PASSWORD, "confirm": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/teams"
    with site.sessions() as session:
        user = session.execute(select(User).where(User.email == "new@example.org")).scalar_one()
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("iugc_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/teams").status_code == 200


@pytest.mark.parametrize("data, message", [
    ({"email": "x@example.org", "password": "short", "confirm": "short"}, "at least 10 characters"),
    ({"email": "x@example.org", "password": PASSWORD, "confirm": PASSWORD + "!"}, "the two passwords differ"),
    ({"email": "not-an-address", "password": PASSWORD, "confirm": PASSWORD}, "is not an e-mail address"),
    ({"email": ORGANIZER, "password": PASSWORD, "confirm": PASSWORD}, "an account with this e-mail exists"),
])
def test_a_bad_registration_says_what_is_wrong_and_creates_nobody(site, data, message):
    with site.sessions() as session:
        before = session.execute(select(func.count()).select_from(User)).scalar()
    response = site.client().form("/register", data)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    with site.sessions() as session:
        assert session.execute(select(func.count()).select_from(User)).scalar() == before


def test_a_wrong_password_or_unknown_address_get_the_same_answer(site):
    site.person("a@example.org")
    wrong = site.client().form("/login", {"email": "a@example.org", "password": "not the password"})
    unknown = site.client().form("/login", {"email": "nobody@example.org", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong e-mail address or password" in wrong.get_data(as_text=True)
    assert "wrong e-mail address or password" in unknown.get_data(as_text=True)


def test_the_admin_command_and_the_pages_share_one_password_scheme(site):
    with db.transaction(site.sessions) as session:
        accounts.create_user(session, "cli@example.org", "participant", password=PASSWORD)  # as `iugc admin create-user`
    with site.sessions() as session:
        assert accounts.user_by_email(session, "cli@example.org").password_hash.startswith("$argon2id$")
    assert site.client("cli@example.org").get("/account").status_code == 200


def test_an_old_scrypt_hash_logs_in_once_and_is_replaced_by_argon2(site):
    import hashlib
    import secrets

    salt = secrets.token_bytes(16)  # the row an older version wrote: scrypt$<salt>$<hash>, made here with the stdlib
    old = f"scrypt${salt.hex()}${hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1).hex()}"
    with db.transaction(site.sessions) as session:
        accounts.create_user(session, "old@example.org", "participant").password_hash = old
    assert site.client("old@example.org").get("/account").status_code == 200
    with site.sessions() as session:
        assert accounts.user_by_email(session, "old@example.org").password_hash.startswith("$argon2id$")
    assert site.client("old@example.org").get("/account").status_code == 200  # and again, with the new hash
    with db.transaction(site.sessions) as session:
        assert accounts.log_in(session, "old@example.org", "not the password") is None


def _rules(site):
    return [r for r in site.app.url_map.iter_rules() if r.endpoint not in ("static",) and not r.endpoint.startswith("api.")]


def _url(rule) -> str:
    return re.sub(r"<(?:int:)?(\w+)>", lambda m: "1" if "id" in m.group(1) else "svc-sanity-check" if m.group(1) == "slug" else "x", rule.rule)


def test_every_page_declares_who_may_open_it(site):
    rules = _rules(site)
    assert len(rules) >= 20
    assert {r.endpoint for r in rules} <= set(ACCESS), "a page registered without `page(...)`"
    assert {ACCESS[e] for e in ("challenge.overview", "auth.login", "auth.register", "leaderboard.index", "leaderboard.phase")} == {"public"}
    assert all(ACCESS[r.endpoint] == "organizer" for r in rules if r.endpoint.startswith("admin."))


def test_anonymous_visitors_are_sent_to_log_in_from_every_page_that_needs_an_account(site):
    client = site.client()
    token = client.token()
    checked = 0
    for rule in _rules(site):
        if ACCESS[rule.endpoint] == "public":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.get(_url(rule)) if method == "GET" else client.post(_url(rule), data={"csrf_token": token})
            assert response.status_code == 302 and response.headers["Location"].startswith("/login?next="), (method, rule.rule)
            checked += 1
    assert checked >= 15


def test_participants_get_403_on_every_organizer_page(site):
    site.person("a@example.org", "alpha")
    client = site.client("a@example.org")
    token = client.token()
    checked = 0
    for rule in _rules(site):
        if ACCESS[rule.endpoint] != "organizer":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.get(_url(rule)) if method == "GET" else client.post(_url(rule), data={"csrf_token": token})
            assert response.status_code == 403, (method, rule.rule)
            checked += 1
    assert checked >= 6
    with site.sessions() as session:
        assert not session.get(type(challenges.phase_by_slug(session, SANITY)), challenges.phase_by_slug(session, SANITY).id).results_published
    assert site.client(ORGANIZER).get("/admin").status_code == 200


def test_another_teams_submission_is_not_found_and_cannot_be_cancelled(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    sid = site.submission("a@example.org", SANITY)
    beta = site.client("b@example.org")
    assert beta.get(f"/submissions/{sid}").status_code == 404
    assert beta.form(f"/submissions/{sid}/cancel").status_code == 404
    assert beta.get("/submissions/status.json").json == {"submissions": []}
    assert f'data-id="{sid}"' not in beta.get("/submissions").get_data(as_text=True)
    alpha = site.client("a@example.org")
    assert alpha.get(f"/submissions/{sid}").status_code == 200
    assert [row["id"] for row in alpha.get("/submissions/status.json").json["submissions"]] == [sid]
    assert f'data-id="{sid}"' in alpha.get("/submissions").get_data(as_text=True)
    assert site.client(ORGANIZER).get(f"/submissions/{sid}").status_code == 200
    with site.sessions() as session:
        assert session.get(Submission, sid).status.value == "queued"


def test_a_participant_cannot_leave_a_team_they_are_not_in(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    with site.sessions() as session:
        alpha_id = session.execute(select(Team.id).where(Team.name == "alpha")).scalar()
    assert site.client("b@example.org").form(f"/teams/{alpha_id}/leave").status_code == 404
    with site.sessions() as session:
        assert session.execute(select(func.count()).select_from(Membership).where(Membership.team_id == alpha_id)).scalar() == 1


def test_forms_without_a_valid_csrf_token_are_refused_and_change_nothing(site):
    site.person("a@example.org")
    client = site.client("a@example.org")
    other = site.client()
    foreign = other.token()  # a token from another session
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": foreign}):
        response = client.post("/teams/create", data={"name": "sneaky", "challenge": "svc", **data})
        assert response.status_code == 400 and "reload the page" in response.get_data(as_text=True)
        upload = client.post(f"/phases/{SANITY}/upload", data={**data, "image": (open(site.archive(), "rb"), "i.tar")},
                             content_type="multipart/form-data")
        assert upload.status_code == 400
    anonymous = site.client()
    assert anonymous.post("/login", data={"email": ORGANIZER, "password": PASSWORD}).status_code == 400
    assert anonymous.get("/admin").status_code == 302  # not logged in
    assert client.form("/teams/create", {"name": "proper", "challenge": "svc"}).status_code == 302
    with site.sessions() as session:
        assert session.execute(select(Team.name)).scalars().all() == ["proper"]
        assert session.execute(select(func.count()).select_from(Submission)).scalar() == 0


def test_the_api_takes_bearer_tokens_without_csrf(site):
    site.person("a@example.org")
    with db.transaction(site.sessions) as session:
        token = accounts.issue_token(session, "a@example.org")
    response = site.app.test_client().post("/api/v1/teams", json={"name": "api-team"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    assert site.app.test_client().get("/api/v1/nothing").json["error"].startswith("no such endpoint")


def test_login_registration_and_upload_are_rate_limited(tmp_path):
    site = Site(tmp_path, RATE_LIMIT_LOGIN="3 per minute", RATE_LIMIT_REGISTER="2 per hour", RATE_LIMIT_UPLOAD="2 per hour")
    try:
        site.person("a@example.org", "alpha")
        client = site.client()
        codes = [client.form("/login", {"email": "a@example.org", "password": "wrong password"}).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        assert "Too many attempts" in client.form("/login", {"email": "a@example.org", "password": PASSWORD}).get_data(as_text=True)
        assert client.get("/login").status_code == 200  # only POSTs count

        registrations = [client.form("/register", {"email": f"r{i}@example.org", "password": PASSWORD, "confirm": PASSWORD}).status_code
                         for i in range(3)]
        assert registrations[2] == 429
        with site.sessions() as session:
            assert session.execute(select(func.count()).select_from(User).where(User.email == "r2@example.org")).scalar() == 0

        site.app.config["RATE_LIMIT_LOGIN"] = "100 per minute"
        uploader = Site.client(site, "a@example.org")
        token = uploader.token()
        codes = [uploader.post(f"/phases/{SANITY}/upload", data={"csrf_token": token, "image": (open(site.archive(), "rb"), "i.tar")},
                               content_type="multipart/form-data").status_code for _ in range(3)]
        assert codes == [302, 302, 429]
        with site.sessions() as session:
            assert session.execute(select(func.count()).select_from(Submission)).scalar() == 2
    finally:
        site.close()


def test_a_forged_session_cookie_is_anonymous(site):
    client = site.client()
    client.get("/login")
    with site.sessions() as session:
        organizer = accounts.user_by_email(session, ORGANIZER)
    from iugc.submissions.accounts import fingerprint

    claim = {"_user_id": f"{organizer.id}:{fingerprint(organizer.password_hash)}", "_fresh": True}
    interface = SecureCookieSessionInterface()
    forged = URLSafeTimedSerializer("not the app's key", salt=interface.salt, serializer=interface.serializer,
                                    signer_kwargs={"key_derivation": interface.key_derivation, "digest_method": interface.digest_method}).dumps(claim)
    client.http.set_cookie("iugc_session", forged)
    response = client.get("/admin")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    # correctly signed, but naming the organizer with a stale password fingerprint: also anonymous
    stale = interface.get_signing_serializer(site.app).dumps({**claim, "_user_id": f"{organizer.id}:0000000000000000"})
    client.http.set_cookie("iugc_session", stale)
    assert client.get("/admin").status_code == 302


def test_changing_a_password_ends_existing_sessions(site):
    site.person("a@example.org")
    client = site.client("a@example.org")
    assert client.get("/account").status_code == 200
    with db.transaction(site.sessions) as session:
        from iugc.submissions.accounts import hash_password

        accounts.user_by_email(session, "a@example.org").password_hash = hash_password("another long phrase")
    assert client.get("/account").status_code == 302


def test_a_deactivated_account_is_logged_out(site):
    site.person("a@example.org")
    client = site.client("a@example.org")
    with db.transaction(site.sessions) as session:
        accounts.user_by_email(session, "a@example.org").active = False
    assert client.get("/account").status_code == 302
    assert site.client().form("/login", {"email": "a@example.org", "password": PASSWORD}).status_code == 401


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_the_site(site, target):
    client = site.client()
    response = client.post(f"/login?next={target}", data={"email": ORGANIZER, "password": PASSWORD, "csrf_token": client.token()})
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_login_goes_back_to_the_page_that_asked_for_it(site):
    client = site.client()
    response = client.post("/login?next=/admin", data={"email": ORGANIZER, "password": PASSWORD, "csrf_token": client.token()})
    assert response.headers["Location"] == "/admin"


def test_pages_send_security_headers(site):
    response = site.client().get("/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("name", ["iugc.leaderboard.web", "iugc.leaderboard.web.security", "iugc.leaderboard.web.admin", "iugc.leaderboard.web.leaderboard"])
def test_docstring_examples_of_the_web_modules(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), verbose=False, report=False)
    assert result.attempted > 0 and result.failed == 0
