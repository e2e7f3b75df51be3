"""API v1 through Flask's test client, on SQLite and PostgreSQL: tokens, teams, uploads
(and every kind of bad input changing nothing), status, cases, cancel, the leaderboard,
final results hidden until published, and the OpenAPI document."""
from __future__ import annotations

import io
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from iugc.leaderboard.app import create_app
from iugc.submissions import accounts, challenges, db, queue
from iugc.submissions.exceptions import SchemaNotCurrent
from iugc.submissions.models import Evaluation, Submission, Team
from tests.service_support import Service, challenge_file, database_url, docker_like_archive, postgres_cluster, redis_server, s3_endpoint  # noqa: F401

SANITY, VALIDATION, FINAL = "svc-sanity-check", "svc-validation", "svc-final-test"


@pytest.fixture
def service(database_url, tmp_path):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, limits={"submissions_per_day": 3, "image_size_limit_mb": 1}))
    svc.app = create_app({"DATABASE_URL": database_url, "STORAGE_URL": str(svc.storage.root), "INSTANCE": str(tmp_path)})
    svc.client = svc.app.test_client()
    yield svc
    svc.app.extensions["iugc"].engine.dispose()
    svc.engine.dispose()


def _token(service, email, team=None):
    service.participant(email, team) if email != "org@example.org" else None
    with db.transaction(service.sessions) as session:
        return {"Authorization": f"Bearer {accounts.issue_token(session, email)}"}


def _upload(service, headers, salt, slug=SANITY, **kw):
    path = docker_like_archive(service.tmp / f"u{salt}.tar", str(salt), **kw)
    return service.client.post(f"/api/v1/phases/{slug}/submissions", headers=headers,
                               data={"image": (open(path, "rb"), "image.tar")}, content_type="multipart/form-data")


def test_every_endpoint_but_the_document_needs_a_valid_token(service):
    doc = service.client.get("/api/v1/openapi.json")
    assert doc.status_code == 200
    for path, methods in doc.json["paths"].items():
        for method, operation in methods.items():
            if path.endswith("openapi.json"):
                assert operation["security"] == []
                continue
            url = path.replace("{slug}", SANITY).replace("{submission_id}", "1").replace("{team_id}", "1")
            for headers in ({}, {"Authorization": "Bearer iugc_forged"}, {"Authorization": "Basic eDp5"}):
                response = service.client.open(url, method=method.upper(), headers=headers)
                assert response.status_code == 401, (method, url, headers)
                assert "token" in response.json["error"]


def test_the_openapi_document_covers_every_api_rule(service):
    doc = service.client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    rules = {(r.rule, m) for r in service.app.url_map.iter_rules() if r.endpoint.startswith("api.")
             for m in r.methods - {"HEAD", "OPTIONS"}}
    documented = {(p, m.upper()) for p, ms in doc["paths"].items() for m in ms}
    as_flask = {(p.replace("{slug}", "<slug>").replace("{submission_id}", "<int:submission_id>").replace("{team_id}", "<int:team_id>")
                 .replace("{name}", "<name>"), m)
                for p, m in documented}
    assert as_flask == rules and len(rules) == 14
    upload = doc["paths"]["/api/v1/phases/{slug}/submissions"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"202", "409", "413", "422", "429", "503"} <= set(upload["responses"])


def test_phases_list_quota_left_for_the_callers_team(service):
    alpha = _token(service, "a@example.org", "alpha")
    assert _upload(service, alpha, 1).status_code == 202
    phases = service.client.get("/api/v1/phases", headers=alpha).json
    assert [p["slug"] for p in phases] == [SANITY, VALIDATION, FINAL]
    sanity = phases[0]
    assert sanity["challenge"] == "svc" and sanity["limits"]["time_limit_seconds"] == 300
    assert sanity["quota"]["team"] == "alpha" and sanity["quota"]["left_today"] == 2
    assert phases[1]["quota"]["left_today"] == 3


def test_teams(service):
    user = _token(service, "a@example.org")
    created = service.client.post("/api/v1/teams", headers=user, json={"name": "alpha"})
    assert created.status_code == 201 and created.json["name"] == "alpha"
    again = service.client.post("/api/v1/teams", headers=user, json={"name": "beta"})
    assert again.status_code == 409 and "one team per challenge" in again.json["error"]
    other = _token(service, "b@example.org")
    taken = service.client.post("/api/v1/teams", headers=other, json={"name": "alpha"})
    assert taken.status_code == 409 and "taken" in taken.json["error"]
    for body, said, field in (("{not json", "the body must be a JSON object such as {\"name\": \"...\"}", None),
                              ("[1]", "must be a JSON object", None),
                              ('{"name": 5}', "the field 'name' must be a string, got a number", "name"),
                              ('{"name": null}', "must be a string, got null", "name"),
                              ('{"nmae": "x"}', "unknown field 'nmae'; this endpoint takes name, challenge", "nmae"),
                              ("{}", "the field 'name' is missing", "name"),
                              ('{"name": "' + "x" * 1001 + '"}', "is 1001 characters long; at most 1000", "name")):
        bad = service.client.post("/api/v1/teams", headers=other, data=body, content_type="application/json")
        assert bad.status_code == 400 and said in bad.json["error"], (body, bad.json)
        assert bad.json.get("field") == field
    from iugc.submissions.models import Membership, Team

    with service.sessions() as session:
        assert [t.name for t in session.query(Team)] == ["alpha"] and session.query(Membership).count() == 1


def test_joining_and_leaving_a_team_through_the_api(service):
    from iugc.submissions import teams
    from iugc.submissions.models import Membership

    alpha = _token(service, "a@example.org")
    team_id = service.client.post("/api/v1/teams", headers=alpha, json={"name": "alpha"}).json["id"]
    beta, gamma = _token(service, "b@example.org"), _token(service, "c@example.org")
    link = teams.invitation_token(service.app.secret_key, team_id)
    joined = service.client.post("/api/v1/teams/join", headers=beta, json={"invitation": link})
    assert joined.status_code == 200 and joined.json["name"] == "alpha"
    twice = service.client.post("/api/v1/teams/join", headers=beta, json={"invitation": link})
    assert twice.status_code == 409 and "already in a team" in twice.json["error"]
    forged = service.client.post("/api/v1/teams/join", headers=gamma, json={"invitation": link[:-3] + "abc"})
    assert forged.status_code == 400 and "not valid" in forged.json["error"]
    with db.transaction(service.sessions) as session:  # an e-mail invitation to c@, used once, by c@ only
        from iugc.submissions.models import User

        inviter = session.query(User).filter_by(email="a@example.org").one()
        _, mailed = teams.invite(session, inviter, team_id, "c@example.org")
    assert service.client.post("/api/v1/teams/join", headers=_token(service, "d@example.org"),
                               json={"invitation": mailed}).status_code == 403
    assert service.client.post("/api/v1/teams/join", headers=gamma, json={"invitation": mailed}).status_code == 200
    assert service.client.post("/api/v1/teams/join", headers=gamma, json={"invitation": mailed}).status_code == 400  # used
    left = service.client.post(f"/api/v1/teams/{team_id}/leave", headers=beta)
    assert left.status_code == 200
    assert service.client.post(f"/api/v1/teams/{team_id}/leave", headers=beta).status_code == 404
    with service.sessions() as session:
        members = {m.user.email for m in session.query(Membership).filter_by(team_id=team_id)}
    assert members == {"a@example.org", "c@example.org"}


def test_an_upload_is_accepted_and_followed(service):
    alpha = _token(service, "a@example.org", "alpha")
    accepted = _upload(service, alpha, 1)
    assert accepted.status_code == 202 and accepted.json["status"] == "queued"
    status = service.client.get(f"/api/v1/submissions/{accepted.json['id']}", headers=alpha).json
    assert status["status"] == "queued" and status["done"] is False and status["score"] is None
    assert [h["to"] for h in status["evaluations"][0]["history"]] == ["received", "validating", "queued"]
    assert "worker_host" not in status["evaluations"][0]
    job = queue.claim_next(service.sessions, "h:1:x")
    result = {"status": "succeeded", "image_digest": "sha256:abc", "logs": "hello\n", "error": None,
              "cases": {"c1": {"dice_all": 0.8, "error": None}}, "aggregates": {"dice": 0.8}, "score": 0.7}
    queue.finish(service.sessions, job, result)
    done = service.client.get(f"/api/v1/submissions/{accepted.json['id']}", headers=alpha).json
    assert (done["status"], done["done"], done["score"], done["aggregates"]) == ("succeeded", True, 0.7, {"dice": 0.8})
    assert done["evaluations"][0]["logs"] == "hello\n"  # the sanity check shows logs
    cases = service.client.get(f"/api/v1/submissions/{accepted.json['id']}/cases", headers=alpha)
    assert cases.status_code == 200 and cases.json["cases"] == {"c1": {"dice_all": 0.8, "error": None}}


def test_bad_uploads_get_their_error_and_change_nothing(service):
    alpha = _token(service, "a@example.org", "alpha")
    loner = _token(service, "l@example.org")
    assert _upload(service, alpha, "first").status_code == 202
    before = service.counts()
    cases = [
        (_upload(service, alpha, "t", extra=[("../escape", b"x")]), 422, "'..' component"),
        (_upload(service, alpha, "m", manifest=False), 422, "no manifest.json"),
        (_upload(service, alpha, "big", extra=[("blob", bytes(2 * 2**20))]), 413, "larger than the limit of 1 MB"),
        (_upload(service, alpha, "first"), 409, "already submitted"),
        (_upload(service, alpha, "x", slug="nope"), 404, "no phase 'nope'"),
        (_upload(service, loner, "y"), 403, "in no team"),
        (service.client.post(f"/api/v1/phases/{SANITY}/submissions", headers=alpha, data={"other": (io.BytesIO(b"x"), "x")},
                             content_type="multipart/form-data"), 400, "multipart form field `image`"),
        (service.client.post(f"/api/v1/phases/{SANITY}/submissions", headers=alpha, data=b"garbage",
                             content_type="application/x-tar"), 400, "multipart form field `image`"),
        (service.client.post(f"/api/v1/phases/{SANITY}/submissions", headers=alpha,
                             data={"image": (io.BytesIO(b"not a tar" * 100), "x.tar")}, content_type="multipart/form-data"),
         422, "not a readable tar archive"),
        (service.client.post(f"/api/v1/phases/{SANITY}/submissions", headers=alpha,
                             data={"image": (io.BytesIO(b""), "x.tar")}, content_type="multipart/form-data"), 422, "empty"),
    ]
    for response, code, message in cases:
        assert response.status_code == code and message in response.json["error"], (code, response.json)
    assert service.counts() == before


def test_over_quota_is_429_with_when_it_frees(service):
    alpha = _token(service, "a@example.org", "alpha")
    for i in range(3):
        assert _upload(service, alpha, i).status_code == 202
    before = service.counts()
    refused = _upload(service, alpha, 9)
    assert refused.status_code == 429 and "frees up at" in refused.json["error"]
    assert refused.json["retry_after"] and int(refused.headers["Retry-After"]) > 23 * 3600
    assert service.counts() == before


def test_other_teams_data_is_not_visible(service):
    alpha, beta = _token(service, "a@example.org", "alpha"), _token(service, "b@example.org", "beta")
    sid = _upload(service, alpha, 1, slug=VALIDATION).json["id"]
    for url in (f"/api/v1/submissions/{sid}", f"/api/v1/submissions/{sid}/cases"):
        response = service.client.get(url, headers=beta)
        assert response.status_code == 404 and response.json == {"error": f"no submission {sid}"}
    assert service.client.post(f"/api/v1/submissions/{sid}/cancel", headers=beta).status_code == 404
    assert service.client.get("/api/v1/submissions/999", headers=alpha).status_code == 404
    hidden = service.client.get(f"/api/v1/submissions/{sid}/cases", headers=alpha)
    assert hidden.status_code == 403 and "does not show per-case values" in hidden.json["error"]
    cancelled = service.client.post(f"/api/v1/submissions/{sid}/cancel", headers=alpha)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    again = service.client.post(f"/api/v1/submissions/{sid}/cancel", headers=alpha)
    assert again.status_code == 400 and "already cancelled" in again.json["error"]


def _score(service, headers, salt, slug, aggregates):
    sid = _upload(service, headers, salt, slug=slug).json["id"]
    job = queue.claim_next(service.sessions, f"h:{salt}:x")
    result = {"status": "succeeded", "aggregates": aggregates, "score": _psfhs_score(aggregates), "cases": {}}  # as evaluate_image
    assert queue.finish(service.sessions, job, result)
    return sid


GOOD = {"dice": 0.9, "dice_ps": 0.85, "dice_fh": 0.93, "dice_all": 0.92, "hd": 10.0, "asd": 3.0, "aop_error": 6.0, "n_cases": 5}
FAIR = {**GOOD, "dice": 0.8, "hd": 20.0, "asd": 6.0, "aop_error": 12.0}
POOR = {**GOOD, "dice": 0.6, "hd": 40.0, "asd": 12.0, "aop_error": 30.0}


def _psfhs_score(a):  # the PSFHS 2023 formula, written out
    return 0.25 * a["dice"] + 0.125 * (1 - a["hd"] / 100) + 0.125 * (1 - a["asd"] / 100) + 0.5 * (1 - a["aop_error"] / 180)


def test_the_leaderboard_ranks_each_teams_best_submission(service):
    alpha, beta = _token(service, "a@example.org", "alpha"), _token(service, "b@example.org", "beta")
    _score(service, alpha, "a1", VALIDATION, POOR)
    best_alpha = _score(service, alpha, "a2", VALIDATION, GOOD)
    best_beta = _score(service, beta, "b1", VALIDATION, FAIR)
    board = service.client.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers=beta)
    assert board.status_code == 200
    rows = board.json["rows"]
    assert [(r["team"], r["submission"], r["rank"]) for r in rows] == [("alpha", best_alpha, 1), ("beta", best_beta, 2)]
    assert rows[0]["score"] == pytest.approx(_psfhs_score(GOOD)) and rows[1]["score"] == pytest.approx(_psfhs_score(FAIR))
    assert {k: rows[0][k] for k in ("dice_ps", "dice_fh", "dice_all", "hd", "asd", "aop_error")} == \
        {k: GOOD[k] for k in ("dice_ps", "dice_fh", "dice_all", "hd", "asd", "aop_error")}
    assert service.client.get("/api/v1/phases/nope/leaderboard", headers=beta).status_code == 404


def test_a_team_describes_and_chooses_its_counted_submission_through_the_api(service):
    alpha, beta = _token(service, "a@example.org", "alpha"), _token(service, "b@example.org", "beta")
    organizer = _token(service, "org@example.org")
    worse = _score(service, alpha, "a1", VALIDATION, POOR)
    best = _score(service, alpha, "a2", VALIDATION, GOOD)

    def row():
        (only,) = service.client.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers=alpha).json["rows"]
        return only["submission"], only["chosen"], only["description"], only["link"]

    assert row() == (best, False, None, None)
    assert service.client.post(f"/api/v1/submissions/{worse}/choose", headers=alpha).json == {"id": worse, "counts": True}
    said = service.client.post(f"/api/v1/submissions/{worse}/description", headers=alpha,
                               json={"description": "a plain U-Net", "url": "https://example.org/unet"})
    assert said.status_code == 200 and row() == (worse, True, "a plain U-Net", "https://example.org/unet")
    bad = service.client.post(f"/api/v1/submissions/{worse}/description", headers=alpha, json={"description": "x", "url": "file:///etc"})
    assert bad.status_code == 400 and bad.json["field"] == "url" and row()[3] == "https://example.org/unet"
    assert service.client.post(f"/api/v1/submissions/{worse}/choose", headers=beta).status_code == 404
    assert service.client.post(f"/api/v1/submissions/{worse}/choose", headers=organizer).status_code == 403
    assert service.client.post(f"/api/v1/submissions/{worse}/unchoose", headers=alpha).json == {"id": worse, "counts": False}
    assert row()[:2] == (best, False)


def test_final_results_are_hidden_until_published(service):
    alpha = _token(service, "a@example.org", "alpha")
    organizer = _token(service, "org@example.org")
    sid = _score(service, alpha, "f", FINAL, GOOD)
    hidden = service.client.get(f"/api/v1/phases/{FINAL}/leaderboard", headers=alpha)
    assert hidden.status_code == 403 and "not published" in hidden.json["error"]
    status = service.client.get(f"/api/v1/submissions/{sid}", headers=alpha).json
    assert status["status"] == "succeeded" and status["score"] is None and status["results_hidden"]
    assert service.client.get(f"/api/v1/phases/{FINAL}/leaderboard", headers=organizer).json["rows"][0]["submission"] == sid
    with db.transaction(service.sessions) as session:
        challenges.publish(session, FINAL)
    assert service.client.get(f"/api/v1/phases/{FINAL}/leaderboard", headers=alpha).json["rows"][0]["submission"] == sid


def test_an_unknown_api_path_is_json_and_the_app_refuses_an_unmigrated_database(service, tmp_path):
    response = service.client.get("/api/v1/nothing-here")
    assert response.status_code == 404 and "openapi.json" in response.json["error"]
    with pytest.raises(SchemaNotCurrent, match="iugc db upgrade"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}", "INSTANCE": str(tmp_path)})


def test_uploads_go_to_an_s3_store_when_configured(database_url, tmp_path, monkeypatch, request):
    import uuid

    from tests.service_support import s3_client

    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"iugc-{uuid.uuid4().hex[:10]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    svc = Service(database_url, tmp_path, challenge_file(tmp_path))
    app = create_app({"DATABASE_URL": database_url, "STORAGE_URL": f"s3://{bucket}/archives", "S3_ENDPOINT_URL": endpoint,
                      "INSTANCE": str(tmp_path)})
    svc.client, store = app.test_client(), app.extensions["iugc"].storage
    alpha = _token(svc, "a@example.org", "alpha")
    assert _upload(svc, alpha, "t", extra=[("../x", b"x")]).status_code == 422
    assert store.keys() == []
    accepted = _upload(svc, alpha, 1)
    assert accepted.status_code == 202
    status = svc.client.get(f"/api/v1/submissions/{accepted.json['id']}", headers=alpha).json
    assert store.keys() == [status["archive_sha256"]]
    assert list((tmp_path / "staging").glob("*")) == []  # staged, checked, uploaded, removed
    app.extensions["iugc"].engine.dispose()
    svc.engine.dispose()


def _limited_service(database_url, tmp_path, **rates):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path))
    svc.app = create_app({"DATABASE_URL": database_url, "STORAGE_URL": str(svc.storage.root), "INSTANCE": str(tmp_path), **rates})
    svc.client = svc.app.test_client()
    return svc


def test_api_calls_over_the_tokens_rate_get_429_and_other_tokens_go_on(database_url, tmp_path):
    svc = _limited_service(database_url, tmp_path, API_RATE_LIMIT="3 per minute")
    alpha, beta = _token(svc, "a@example.org", "alpha"), _token(svc, "b@example.org", "beta")
    assert [svc.client.get("/api/v1/phases", headers=alpha).status_code for _ in range(3)] == [200] * 3
    refused = svc.client.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers=alpha)  # every endpoint shares the count
    assert refused.status_code == 429
    assert "3 per 1 minute" in refused.json["error"] and refused.json["retry_after"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert svc.client.get("/api/v1/phases", headers=beta).status_code == 200  # per token, not per address
    assert svc.client.get("/api/v1/phases", headers=_token(svc, "org@example.org")).status_code == 200
    assert svc.client.get("/api/v1/phases", headers={"Authorization": "Bearer iugc_forged"}).status_code == 401
    svc.app.extensions["iugc"].engine.dispose()
    svc.engine.dispose()


def test_an_upload_over_the_upload_rate_gets_429_and_stores_nothing(database_url, tmp_path):
    svc = _limited_service(database_url, tmp_path, API_UPLOAD_RATE_LIMIT="1 per hour")
    alpha = _token(svc, "a@example.org", "alpha")
    assert _upload(svc, alpha, 1).status_code == 202
    before = svc.counts()
    refused = _upload(svc, alpha, 2)
    assert refused.status_code == 429 and "too many uploads" in refused.json["error"] and "1 per 1 hour" in refused.json["error"]
    assert 3000 < int(refused.headers["Retry-After"]) <= 3600
    assert svc.counts() == before
    assert svc.client.get("/api/v1/phases", headers=alpha).status_code == 200  # the general rate is not used up
    svc.app.extensions["iugc"].engine.dispose()
    svc.engine.dispose()


def test_the_openapi_document_lists_429_for_every_authenticated_endpoint(service):
    doc = service.client.get("/api/v1/openapi.json").json
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            assert ("429" in operation["responses"]) == (not path.endswith("openapi.json")), (method, path)


def test_a_rate_that_cannot_be_read_stops_the_app_naming_the_setting(service, tmp_path, monkeypatch):
    from iugc.submissions.exceptions import ConfigurationError

    monkeypatch.setenv("IUGC_API_RATE_LIMIT", "lots")
    with pytest.raises(ConfigurationError, match="IUGC_API_RATE_LIMIT .* is 'lots', not a rate"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'iugc.sqlite3'}", "INSTANCE": str(tmp_path)})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_a_redis_broker_the_rate_counters_are_shared_by_every_app(database_url, tmp_path, request):
    redis = request.getfixturevalue("redis_server")
    rates = {"API_RATE_LIMIT": "2 per minute", "BROKER_URL": redis.url}
    first = _limited_service(database_url, tmp_path, **rates)
    alpha = _token(first, "a@example.org", "alpha")
    assert [first.client.get("/api/v1/phases", headers=alpha).status_code for _ in range(2)] == [200, 200]
    # another app (another process of the deployment) counts against the same Redis counters;
    # with in-memory counters (RATELIMIT_STORAGE_URI memory://) this call is allowed
    second = create_app({"DATABASE_URL": database_url, "STORAGE_URL": str(first.storage.root), "INSTANCE": str(tmp_path), **rates})
    assert second.test_client().get("/api/v1/phases", headers=alpha).status_code == 429
    redis.stop()  # the counters are away: calls are served (and a warning logged), not refused or failed
    assert [second.test_client().get("/api/v1/phases", headers=alpha).status_code for _ in range(3)] == [200, 200, 200]
    redis.start()  # back (empty: no persistence): counted again, without a restart of the app
    assert [second.test_client().get("/api/v1/phases", headers=alpha).status_code for _ in range(3)] == [200, 200, 429]
    for app in (first.app, second):
        app.extensions["iugc"].engine.dispose()
    first.engine.dispose()


def test_a_submissions_status_takes_the_same_few_statements_however_many_evaluations_it_has(service):
    from sqlalchemy import event

    from iugc.submissions import reports
    from iugc.submissions.models import User

    alpha = _token(service, "a@example.org", "alpha")
    sid = _upload(service, alpha, 1).json["id"]
    for number in range(3):  # evaluated, then re-evaluated twice: three evaluations with their histories
        job = queue.claim_next(service.sessions, f"h:{number}:x")
        assert queue.finish(service.sessions, job, {"status": "succeeded", "aggregates": {"dice": 0.5}, "score": 0.5, "cases": {}})
        if number < 2:
            assert queue.reevaluate(service.sessions, None, SANITY, sid)
    statements = []
    event.listen(service.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with service.sessions() as session:
        for email in ("a@example.org", "org@example.org"):
            user = session.query(User).filter_by(email=email).one()
            statements.clear()
            status = reports.submission_status(session, user, sid)
            assert [len(e["history"]) for e in status["evaluations"]] == [5, 4, 4]
            assert len(statements) <= (4 if email == "a@example.org" else 3), statements  # + the participant's team


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_any_json_body_gets_an_answer_in_words_never_a_server_error(service):
    """Property-based (Hypothesis): whatever JSON a client sends to the endpoints that read
    a body, the answer is a 2xx or a 4xx with one short sentence, never a 500 or a traceback."""
    caller = _token(service, "p@example.org")
    bodies = st.one_of(JSON, st.fixed_dictionaries({"name": JSON}), st.fixed_dictionaries({"invitation": JSON}),
                       st.fixed_dictionaries({"name": st.text(max_size=40), "challenge": JSON}))

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(path=st.sampled_from(["/api/v1/teams", "/api/v1/teams/join"]), body=bodies)
    def check(path, body):
        answer = service.client.post(path, headers=caller, json=body)
        assert answer.status_code < 500, (path, body, answer.data[:300])
        if answer.status_code >= 400:
            assert set(answer.json) <= {"error", "field", "retry_after"} and 0 < len(answer.json["error"]) < 400
            assert "Traceback" not in answer.json["error"] and "Error(" not in answer.json["error"]

    check()


def test_every_endpoint_answers_junk_in_its_path_with_a_sentence_never_a_server_error(service):
    """Each API v1 path parameter given what makes no sense (a number past 64 bits, zero, a
    negative one, a long, non-ASCII, NUL or markup slug): a 4xx JSON sentence, nothing changed."""
    caller = _token(service, "p@example.org", "team-a")
    junk = {"submission_id": ["99999999999999999999999", "0", "-1", "1.5", "x"], "team_id": ["99999999999999999999999", "0", "-1"],
            "slug": ["s" * 5000, "ph%C3%A4se", "%00", "<script>", "..%2F..%2Fetc"], "name": ["n" * 5000, "%00", "<b>x</b>"]}
    doc = service.client.get("/api/v1/openapi.json").json
    with service.sessions() as session:
        before = [session.execute(select(func.count()).select_from(model)).scalar() for model in (Submission, Evaluation, Team)]
    tried = 0
    for path, methods in doc["paths"].items():
        for name in re.findall(r"\{(\w+)\}", path):
            for value in junk[name]:
                url = re.sub(r"\{(\w+)\}", lambda m: value if m[1] == name else {"slug": SANITY, "name": "psfhs2023"}.get(m[1], "1"), path)
                for method in methods:
                    answer = service.client.open(url, method=method.upper(), headers=caller)
                    tried += 1
                    assert 400 <= answer.status_code < 500, (method, url[:80], answer.status_code, answer.data[:200])
                    assert answer.is_json and 0 < len(answer.json["error"]) < 400, (method, url[:80], answer.data[:200])
                    assert "Traceback" not in answer.json["error"] and "Error(" not in answer.json["error"]
    assert tried > 40
    with service.sessions() as session:
        assert [session.execute(select(func.count()).select_from(model)).scalar() for model in (Submission, Evaluation, Team)] == before
