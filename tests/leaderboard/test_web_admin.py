"""The organizer's editing from the browser (a phase's window and quotas, its dataset),
disqualification of teams and submissions, and the ranked-leaderboard store shared by the
API, the page and the exports: each change goes through the same ``submissions``
function as `iugc admin`, is audited, needs an organizer and a CSRF token, and a refused
one says why on the page and changes nothing."""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import io
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select

from iugc.submissions import accounts, challenges, db
from iugc.submissions.models import AuditEntry, Dataset, Phase, Submission, Team
from tests.service_support import database_url, postgres_cluster  # noqa: F401 (fixtures)
from tests.web_support import FAIR, FINAL, GOOD, ORGANIZER, SANITY, VALIDATION, Site, open_site

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")
UTC = dt.timezone.utc


@pytest.fixture
def site(database_url, tmp_path):
    """A fresh site, on SQLite and on PostgreSQL."""
    yield from open_site(tmp_path, database_url)


@pytest.fixture
def lite(tmp_path):
    """A fresh site on SQLite only (for what does not depend on the database)."""
    yield from open_site(tmp_path)


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def phase_row(site, slug) -> dict:
    with site.sessions() as session:
        p = challenges.phase_by_slug(session, slug)
        return {"opens": p.opens_at, "closes": p.closes_at, "per_day": p.submissions_per_day,
                "total": p.submissions_total, "failures": p.failures_count}


def audit_actions(site) -> list[str]:
    with site.sessions() as session:
        return session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars().all()


SETTINGS = {"opens": "2026-01-01T08:00", "closes": "2030-06-30T18:30", "per_day": "2", "total": "7", "failures_count": "y"}


# ---- window and quotas ----------------------------------------------------------------

def test_an_organizer_edits_a_phases_window_and_quotas_and_uploads_follow_them(site):
    organizer = site.client(ORGANIZER)
    page = organizer.get(f"/admin/phases/{SANITY}")
    assert page.status_code == 200 and 'id="phase-settings"' in page.get_data(as_text=True)
    response = organizer.form(f"/admin/phases/{SANITY}/settings", {**SETTINGS, "per_day": "1", "failures_count": ""}, page=f"/admin/phases/{SANITY}")
    assert response.status_code == 302
    assert phase_row(site, SANITY) == {"opens": dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC), "closes": dt.datetime(2030, 6, 30, 18, 30, tzinfo=UTC),
                                       "per_day": 1, "total": 7, "failures": False}
    organizer_id = site.user_id(ORGANIZER)
    with site.sessions() as session:
        entry = session.execute(select(AuditEntry).where(AuditEntry.action == "phase.update")).scalar_one()
        assert entry.target == f"phase:{SANITY}" and entry.actor_id == organizer_id
        assert entry.detail["submissions_per_day"] == {"from": 5, "to": 1} and entry.detail["failures_count"] == {"from": True, "to": False}
    # the upload rules read the new quota: one a day
    site.person("a@example.org", "alpha")
    site.submission("a@example.org", SANITY)
    from iugc.submissions.exceptions import QuotaExceeded

    with pytest.raises(QuotaExceeded, match="its 1 submissions of the last 24 hours"):
        site.submission("a@example.org", SANITY)
    # the form shows what is stored
    shown = organizer.get(f"/admin/phases/{SANITY}").get_data(as_text=True)
    assert 'value="2026-01-01T08:00"' in shown and 'value="2030-06-30T18:30"' in shown


@pytest.mark.parametrize("change, field, message", [
    ({"opens": "2030-01-02T00:00", "closes": "2030-01-01T00:00"}, "closes", "the phase must close after it opens"),
    ({"per_day": "-1"}, "per_day", "submissions per 24 hours must be a whole number from 1 to 1,000,000, got -1"),
    ({"per_day": "99999999999999999999"}, "per_day", "submissions per 24 hours must be a whole number from 1 to 1,000,000"),
    ({"total": "0"}, "total", "the total of submissions must be a whole number from 1 to 1,000,000 or none, got 0"),
    ({"opens": "next tuesday"}, "opens", "'next tuesday' is not a time"),
    ({"closes": "someday"}, "closes", "'someday' is not a time"),
    ({"per_day": "many"}, "per_day", "Not a valid integer value"),
])
def test_bad_phase_settings_are_refused_on_the_form_and_change_nothing(lite, change, field, message):
    before, actions = phase_row(lite, SANITY), audit_actions(lite)
    organizer = lite.client(ORGANIZER)
    response = organizer.form(f"/admin/phases/{SANITY}/settings", {**SETTINGS, **change}, page=f"/admin/phases/{SANITY}")
    assert response.status_code == 400
    assert message in text(response) and "Nothing was changed" in text(response)
    labels = re.findall(r'<label class="field">(.*?)</label>', response.get_data(as_text=True), re.S)
    under = [label for label in labels if html.unescape(message) in html.unescape(label)]
    assert len(under) == 1 and f'name="{field}"' in under[0]  # under the field at fault, not another one
    assert 'id="phase-settings"' in response.get_data(as_text=True)  # the form again, with its input
    assert phase_row(lite, SANITY) == before and audit_actions(lite) == actions


def test_the_cli_changes_a_phase_through_the_same_rules(lite, monkeypatch):
    from iugc.cli import main

    env = {"IUGC_DATABASE_URL": f"sqlite:///{lite.tmp / 'web.sqlite3'}", "IUGC_INSTANCE": str(lite.tmp)}
    ok = CliRunner().invoke(main, ["admin", "phase", "--phase", SANITY, "--per-day", "3", "--total", "none", "--closes", "2031-01-01T00:00"], env=env)
    assert ok.exit_code == 0, ok.output
    assert phase_row(lite, SANITY)["per_day"] == 3 and phase_row(lite, SANITY)["total"] is None
    bad = CliRunner().invoke(main, ["admin", "phase", "--phase", SANITY, "--opens", "2031-02-01T00:00"], env=env)
    assert bad.exit_code == 1 and "the phase must close after it opens" in bad.output and "Traceback" not in bad.output
    assert phase_row(lite, SANITY)["opens"] is None


def test_the_cli_publishes_and_unpublishes_with_the_audit_trail(lite):
    from iugc.cli import main

    env = {"IUGC_DATABASE_URL": f"sqlite:///{lite.tmp / 'web.sqlite3'}", "IUGC_INSTANCE": str(lite.tmp)}

    def published() -> bool:
        with lite.sessions() as session:
            return challenges.phase_by_slug(session, SANITY).results_published

    assert CliRunner().invoke(main, ["admin", "publish", "--phase", SANITY], env=env).exit_code == 0 and published()
    hidden = CliRunner().invoke(main, ["admin", "unpublish", "--phase", SANITY], env=env)
    assert hidden.exit_code == 0 and f"results of {SANITY} are hidden again" in hidden.output and not published()
    assert audit_actions(lite)[-2:] == ["phase.publish", "phase.unpublish"]
    unknown = CliRunner().invoke(main, ["admin", "unpublish", "--phase", "nope"], env=env)
    assert unknown.exit_code == 1 and "nope" in unknown.output and "Traceback" not in unknown.output


# ---- datasets -------------------------------------------------------------------------

@pytest.fixture
def dataset_folder(tmp_path):
    from iugc.data_manifest.phantom import write_phantom_dataset

    folder = tmp_path / "hidden" / "validation"
    write_phantom_dataset(folder, 4, seed=1)
    return folder, hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()


def test_an_organizer_registers_a_dataset_whose_manifest_hash_matches(lite, dataset_folder):
    folder, digest = dataset_folder
    organizer = lite.client(ORGANIZER)
    response = organizer.form(f"/admin/phases/{VALIDATION}/dataset", {"path": str(folder), "sha256": digest.upper()}, page=f"/admin/phases/{VALIDATION}")
    assert response.status_code == 302
    organizer_id = lite.user_id(ORGANIZER)
    with lite.sessions() as session:
        dataset = session.execute(select(Dataset)).scalar_one()
        assert (dataset.path, dataset.manifest_sha256, dataset.n_cases, dataset.active) == (str(folder), digest, 4, True)
        assert dataset.registered_by_id == organizer_id
    assert audit_actions(lite)[-1] == "dataset.add"
    assert str(folder) in organizer.get(f"/admin/phases/{VALIDATION}").get_data(as_text=True)
    lite.person("a@example.org", "alpha")
    participant = lite.client("a@example.org")
    for path in ("/", "/leaderboard", f"/leaderboard/{VALIDATION}", f"/phases/{VALIDATION}/upload"):
        assert str(folder) not in participant.get(path).get_data(as_text=True)
    assert "hidden" not in str(participant.get("/api/v1/phases").data)


@pytest.mark.parametrize("case", ["wrong hash", "no manifest", "not a folder", "a file changed"])
def test_a_bad_dataset_is_refused_on_the_form_and_registers_nothing(lite, dataset_folder, tmp_path, case):
    folder, digest = dataset_folder
    empty = tmp_path / "empty"
    empty.mkdir()
    if case == "a file changed":
        image = sorted((folder / "images").iterdir())[0]
        image.write_bytes(image.read_bytes() + b"\0")
    path, sha, message = {
        "wrong hash": (folder, "0" * 64, f"the sha256 of {folder / 'manifest.json'} is {digest}"),
        "no manifest": (empty, digest, "is not a dataset from `iugc data import`"),
        "not a folder": (tmp_path / "nowhere", digest, "is not a folder on the server"),
        "a file changed": (folder, digest, "fails `iugc data verify`"),
    }[case]
    actions = audit_actions(lite)
    response = lite.client(ORGANIZER).form(f"/admin/phases/{VALIDATION}/dataset", {"path": str(path), "sha256": sha}, page=f"/admin/phases/{VALIDATION}")
    assert response.status_code == 400 and message in text(response) and "Nothing was changed" in text(response)
    with lite.sessions() as session:
        assert session.execute(select(func.count()).select_from(Dataset)).scalar() == 0
    assert audit_actions(lite) == actions


# ---- who may --------------------------------------------------------------------------

EDITS = [f"/admin/phases/{SANITY}/settings", f"/admin/phases/{SANITY}/dataset", f"/admin/phases/{SANITY}/teams/1/disqualify",
         f"/admin/phases/{SANITY}/teams/1/reinstate", f"/admin/phases/{SANITY}/submissions/disqualify",
         f"/admin/phases/{SANITY}/submissions/1/reinstate"]


def test_only_organizers_may_edit_and_every_edit_needs_the_csrf_token(lite):
    lite.person("a@example.org", "alpha")
    participant, anonymous, organizer = lite.client("a@example.org"), lite.client(), lite.client(ORGANIZER)
    before, actions = phase_row(lite, SANITY), audit_actions(lite)
    assert participant.get(f"/admin/phases/{SANITY}").status_code == 403
    assert anonymous.get(f"/admin/phases/{SANITY}").status_code == 302  # to the login page
    for path in EDITS:
        data = {**SETTINGS, "reason": "a reason", "submission": "1", "path": "/tmp", "sha256": "0" * 64}
        assert participant.form(path, data, page="/teams").status_code == 403, path
        assert anonymous.form(path, data).status_code in (302, 400), path
        assert organizer.post(path, data=data).status_code == 400, path  # no CSRF token
    assert organizer.get("/admin/phases/no-such-phase").status_code == 404
    assert phase_row(lite, SANITY) == before and audit_actions(lite) == actions


# ---- disqualification -----------------------------------------------------------------

def _ranked(client, slug=VALIDATION) -> list[str]:
    page = client.get(f"/leaderboard/{slug}")
    body = page.get_data(as_text=True).split('id="leaderboard"', 1)
    if len(body) < 2:
        return []
    return re.findall(r'<td class="team">([^<]+?)\s*(?:<|$)', body[1].split("</tbody>")[0])


def _team_id(site, name) -> int:
    with site.sessions() as session:
        return session.execute(select(Team.id).where(Team.name == name)).scalar_one()


def test_a_disqualified_team_leaves_page_api_and_exports_sees_why_and_is_reinstated(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    site.submission("a@example.org", VALIDATION, GOOD)
    fair = site.submission("b@example.org", VALIDATION, FAIR)
    organizer = site.client(ORGANIZER)
    with db.transaction(site.sessions) as session:
        token = accounts.issue_token(session, ORGANIZER)
    api = site.app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert _ranked(organizer) == ["alpha", "beta"]
    assert [r["team"] for r in api.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers=auth).json["rows"]] == ["alpha", "beta"]

    alpha = _team_id(site, "alpha")
    response = organizer.form(f"/admin/phases/{VALIDATION}/teams/{alpha}/disqualify", {"reason": "shared weights with beta's lab"},
                              page=f"/admin/phases/{VALIDATION}")
    assert response.status_code == 302
    assert _ranked(organizer) == ["beta"]
    rows = api.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers=auth).json["rows"]
    assert [(r["team"], r["rank"], r["submission"]) for r in rows] == [("beta", 1, fair)]  # beta moves up
    assert [r["team"] for r in organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.json").json["rows"]] == ["beta"]
    exported = list(csv.DictReader(io.StringIO(organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.csv").get_data(as_text=True))))
    assert [(r["team"], r["rank"]) for r in exported] == [("beta", "1")]
    # the team sees why, and may not submit
    member = site.client("a@example.org")
    assert "Your team is disqualified by the organizers: shared weights with beta's lab." in text(member.get("/teams"))
    assert "disqualified shared weights with beta's lab" in text(member.get("/submissions"))
    from iugc.submissions.exceptions import Forbidden

    with pytest.raises(Forbidden, match="your team alpha is disqualified \\(shared weights with beta's lab\\) and may not submit"):
        site.submission("a@example.org", VALIDATION)
    page = organizer.get(f"/admin/phases/{VALIDATION}")
    assert "team alpha shared weights with beta's lab" in text(page)
    # reversible
    assert organizer.form(f"/admin/phases/{VALIDATION}/teams/{alpha}/reinstate", page=f"/admin/phases/{VALIDATION}").status_code == 302
    assert _ranked(organizer) == ["alpha", "beta"]
    assert "disqualified" not in text(member.get("/teams"))
    again = organizer.form(f"/admin/phases/{VALIDATION}/teams/{alpha}/reinstate", page=f"/admin/phases/{VALIDATION}")
    assert again.status_code == 400 and "team alpha is not disqualified" in text(again)
    with site.sessions() as session:
        entries = session.execute(select(AuditEntry).where(AuditEntry.target == f"team:{alpha}").order_by(AuditEntry.id)).scalars().all()
    assert [(e.action, e.detail) for e in entries][-2:] == [("team.disqualify", {"reason": "shared weights with beta's lab"}),
                                                           ("team.reinstate", {"was": "shared weights with beta's lab"})]


def test_a_disqualified_submission_gives_way_to_the_teams_next_best(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    worse = site.submission("a@example.org", VALIDATION, {**FAIR, "dice": 0.5, "hd": 40.0})
    best = site.submission("a@example.org", VALIDATION, GOOD)
    site.submission("b@example.org", VALIDATION, FAIR)
    organizer = site.client(ORGANIZER)
    board = organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.json").json["rows"]
    assert [(r["team"], r["submission"]) for r in board][0] == ("alpha", best)
    response = organizer.form(f"/admin/phases/{VALIDATION}/submissions/disqualify", {"submission": str(best), "reason": "used the test labels"},
                              page=f"/admin/phases/{VALIDATION}")
    assert response.status_code == 302
    board = organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.json").json["rows"]
    assert [(r["team"], r["submission"]) for r in board] == [("beta", board[0]["submission"]), ("alpha", worse)]
    status = site.client("a@example.org").get("/submissions/status.json").json["submissions"]
    assert {r["id"]: r["disqualified"] for r in status} == {best: "used the test labels", worse: None}
    assert organizer.form(f"/admin/phases/{VALIDATION}/submissions/{best}/reinstate", page=f"/admin/phases/{VALIDATION}").status_code == 302
    board = organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.json").json["rows"]
    assert [(r["team"], r["submission"]) for r in board][0] == ("alpha", best)
    assert audit_actions(site)[-2:] == ["submission.disqualify", "submission.reinstate"]


@pytest.mark.parametrize("case, message", [
    ("empty reason", "give a reason of 3 to 500 characters"),
    ("unknown submission", "no submission 999"),
    ("another phase", f"is in {SANITY}, not {VALIDATION}"),
    ("twice", "is already disqualified (first reason); reinstate it first"),
])
def test_a_refused_disqualification_says_why_and_changes_nothing(lite, case, message):
    lite.person("a@example.org", "alpha")
    sid = lite.submission("a@example.org", SANITY if case == "another phase" else VALIDATION, GOOD)
    organizer = lite.client(ORGANIZER)
    if case == "twice":
        assert organizer.form(f"/admin/phases/{VALIDATION}/submissions/disqualify", {"submission": str(sid), "reason": "first reason"},
                              page=f"/admin/phases/{VALIDATION}").status_code == 302
    actions = audit_actions(lite)
    data = {"submission": "999" if case == "unknown submission" else str(sid), "reason": "  " if case == "empty reason" else "cheating"}
    if case == "empty reason":
        data["reason"] = "ab"
    response = organizer.form(f"/admin/phases/{VALIDATION}/submissions/disqualify", data, page=f"/admin/phases/{VALIDATION}")
    assert response.status_code == 400 and message in text(response)
    assert audit_actions(lite) == actions


# ---- the migration --------------------------------------------------------------------

def test_db_upgrade_takes_a_0001_database_to_the_head_keeping_its_data_and_serve_refuses_0001(database_url, tmp_path):
    from iugc.cli import main
    from sqlalchemy import text as sql

    engine = db.make_engine(database_url)
    db.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(sql("INSERT INTO challenges (id, name, title, definition, definition_sha256, created_at) "
                               "VALUES (1, 'c', 'C', '{}', :sha, :now)"), {"sha": "0" * 64, "now": dt.datetime(2026, 1, 1)})
        connection.execute(sql("INSERT INTO teams (id, challenge_id, name, created_at) VALUES (7, 1, 'alpha', :now)"), {"now": dt.datetime(2026, 1, 1)})
        connection.execute(sql("INSERT INTO phases (id, challenge_id, name, slug, title, kind, submissions_per_day, failures_count, "
                               "logs_visible, public_cases, limits, results_published) VALUES "
                               "(3, 1, 'v', 'c-v', 'V', 'validation', 5, false, false, false, '{}', false)"))
    env = {"IUGC_DATABASE_URL": database_url, "IUGC_INSTANCE": str(tmp_path), "IUGC_SECRET_KEY": "s" * 40}
    refused = CliRunner().invoke(main, ["serve", "--workers", "0", "--port", "0"], env=env)
    assert refused.exit_code == 1
    assert f"is at revision 0001, older than this version needs ({db.head_revision()}): run `iugc db upgrade`" in refused.output
    upgraded = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0 and f"upgraded from 0001 to revision {db.head_revision()}" in upgraded.output
    assert db.head_revision() == "0007"  # (a new migration: extend this test with what it adds)
    with engine.connect() as connection:
        assert connection.execute(sql("SELECT id, name, disqualified_at, disqualified_reason, terms_accepted_at, terms_accepted_by_id "
                                      "FROM teams")).all() == [(7, "alpha", None, None, None, None)]  # 0002, 0006
        assert connection.execute(sql("SELECT count(*) FROM invitations")).scalar() == 0  # 0002
        assert connection.execute(sql("SELECT id, board_version, queue_without_worker, counts FROM phases")).all() == [(3, 0, False, "best")]  # 0003, 0005, 0007
        assert connection.execute(sql("SELECT description, description_url, chosen_at FROM submissions")).all() == []  # 0004
        assert connection.execute(sql("SELECT id, cpus, memory_mb, gpu, seen_at FROM workers")).all() == []  # 0005
    db.require_current_schema(engine)
    engine.dispose()


# ---- the shared store of ranked leaderboards -------------------------------------------

def test_the_kept_leaderboard_changes_with_a_new_score_a_publish_and_a_disqualification(lite, monkeypatch):
    from iugc.submissions import reports

    lite.person("a@example.org", "alpha")
    lite.person("b@example.org", "beta")
    lite.submission("b@example.org", VALIDATION, FAIR)
    with db.transaction(lite.sessions) as session:
        token = accounts.issue_token(session, "b@example.org")
    api, anonymous, organizer = lite.app.test_client(), lite.client(), lite.client(ORGANIZER)
    calls = []
    real = reports.rank_teams
    monkeypatch.setattr(reports, "rank_teams", lambda *a, **k: calls.append(1) or real(*a, **k))

    def served():
        rows = api.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers={"Authorization": f"Bearer {token}"}).json["rows"]
        return [r["team"] for r in rows]

    assert served() == ["beta"] and served() == ["beta"] and len(calls) == 1  # kept: ranked once
    assert _ranked(anonymous) == ["beta"] and len(calls) == 1  # a visitor sees the validation board, from the same rows
    lite.submission("a@example.org", VALIDATION, GOOD)  # a new scored submission
    assert served() == ["alpha", "beta"] and len(calls) == 2
    assert _ranked(organizer) == ["alpha", "beta"] and len(calls) == 2  # the page shares the API's rows
    assert organizer.form(f"/admin/phases/{VALIDATION}/publish", page="/admin").status_code == 302  # a publish
    assert _ranked(anonymous) == ["alpha", "beta"]
    assert organizer.form(f"/admin/phases/{VALIDATION}/teams/{_team_id(lite, 'alpha')}/disqualify", {"reason": "late entry"},
                          page=f"/admin/phases/{VALIDATION}").status_code == 302  # a disqualification
    assert served() == ["beta"] and _ranked(anonymous) == ["beta"]


def test_a_kept_leaderboard_request_makes_the_same_few_read_only_queries_however_many_teams(lite):
    with db.transaction(lite.sessions) as session:
        token = accounts.issue_token(session, ORGANIZER)
        challenges.publish(session, VALIDATION)
    counts, begins = {}, {}
    statements = []
    engine = lite.app.extensions["iugc"].engine
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    api, anonymous = lite.app.test_client(), lite.client()
    try:
        for teams in (2, 8):
            while len(_ranked(anonymous)) < teams:
                n = len(_ranked(anonymous))
                lite.person(f"t{n}@example.org", f"team{n}")
                lite.submission(f"t{n}@example.org", VALIDATION, {**GOOD, "dice": 0.5 + n / 100})
            for name, call in (("api", lambda: api.get(f"/api/v1/phases/{VALIDATION}/leaderboard", headers={"Authorization": f"Bearer {token}"})),
                               ("page", lambda: anonymous.get(f"/leaderboard/{VALIDATION}"))):
                assert call().status_code == 200  # ranks and keeps
                statements.clear()
                assert call().status_code == 200
                counts[(name, teams)] = len([q for q in statements if q.startswith("SELECT")])
                begins[name] = [q for q in statements if q.startswith("BEGIN")]
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert counts[("api", 2)] == counts[("api", 8)] == 2, counts  # the token's user; the phase's row (its board version)
    assert counts[("page", 2)] == counts[("page", 8)] == 1, counts  # the phase's row
    # reads do not take SQLite's write lock (BEGIN IMMEDIATE), which queues concurrent requests; one read each
    assert begins == {"api": ["BEGIN"], "page": ["BEGIN"]}, begins


def test_a_kept_api_answer_still_checks_the_token_its_rate_and_the_phase_every_call(tmp_path):
    """The API's leaderboard is kept in front of Flask (iugc.leaderboard.kept_answers); every call
    is still authenticated, counted against its token's rate and refused where hidden."""
    site = Site(tmp_path, API_RATE_LIMIT="4 per minute")
    site.person("a@example.org", "alpha")
    site.submission("a@example.org", VALIDATION, GOOD)
    site.submission("a@example.org", FINAL, GOOD)
    with db.transaction(site.sessions) as session:
        tokens = {email: {"Authorization": f"Bearer {accounts.issue_token(session, email)}"} for email in ("a@example.org", ORGANIZER)}
    api = site.app.test_client()
    board = f"/api/v1/phases/{VALIDATION}/leaderboard"
    assert [api.get(board, headers=tokens["a@example.org"]).status_code for _ in range(5)] == [200] * 4 + [429]  # 3 of them kept
    assert api.get(board, headers=tokens[ORGANIZER]).json["rows"][0]["team"] == "alpha"  # another token: its own count
    final = f"/api/v1/phases/{FINAL}/leaderboard"
    assert api.get(final, headers=tokens[ORGANIZER]).status_code == 200
    assert api.get(final, headers=tokens[ORGANIZER]).status_code == 200  # kept for the organizer's view...
    with db.transaction(site.sessions) as session:  # (a fresh minute's worth of calls for the participant)
        tokens["a@example.org"] = {"Authorization": f"Bearer {accounts.issue_token(session, 'a@example.org')}"}
    refused = api.get(final, headers=tokens["a@example.org"])
    assert refused.status_code == 403 and "not published" in refused.json["error"]  # ...never shown while hidden
    with db.transaction(site.sessions) as session:
        accounts.user_by_email(session, ORGANIZER).active = False
    assert api.get(board, headers=tokens[ORGANIZER]).status_code == 401  # a kept answer, a deactivated caller
    assert api.get(board, headers={"Authorization": "Bearer iugc_forged"}).status_code == 401
    site.close()


def test_a_kept_page_is_served_only_to_visitors_without_a_cookie_and_moves_with_the_board(lite):
    from iugc.leaderboard.kept_answers import KeptAnswers

    lite.person("a@example.org", "alpha")
    lite.person("b@example.org", "beta")
    lite.submission("a@example.org", VALIDATION, FAIR)
    with db.transaction(lite.sessions) as session:
        challenges.publish(session, VALIDATION)
    front = lite.app.wsgi_app
    assert isinstance(front, KeptAnswers)
    anonymous = lite.app.test_client()
    first = anonymous.get(f"/leaderboard/{VALIDATION}")
    assert first.status_code == 200 and "Set-Cookie" not in first.headers and len(front.kept._items) == 1
    again = anonymous.get(f"/leaderboard/{VALIDATION}")
    assert again.get_data() == first.get_data() and again.headers["Content-Security-Policy"] == first.headers["Content-Security-Policy"]
    lite.submission("b@example.org", VALIDATION, GOOD)  # the board moves: a new key, the app renders it anew
    assert _ranked(anonymous) == ["beta", "alpha"] and len(front.kept._items) == 2
    member = lite.client("b@example.org")  # a logged-in visitor (a session cookie) gets the app's own page
    assert "your team" in member.get(f"/leaderboard/{VALIDATION}").get_data(as_text=True)
    assert "your team" not in anonymous.get(f"/leaderboard/{VALIDATION}").get_data(as_text=True)
    assert anonymous.get(f"/leaderboard/{FINAL}").status_code == 403 and len(front.kept._items) == 2  # unpublished: the app says no


def test_the_phase_dashboard_counts_today_failures_by_reason_and_the_workers_running_it(site):
    from iugc.submissions import queue

    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    site.submission("a@example.org", SANITY, GOOD)  # succeeded
    site.submission("a@example.org", VALIDATION, GOOD)  # another phase: not counted here
    site.submission("b@example.org", SANITY)
    job = queue.claim_next(site.sessions, "hostx:41:w0")
    assert queue.finish(site.sessions, job, {"status": "failed", "failure": "time_limit", "error": "over 300 s"})
    site.submission("b@example.org", SANITY)
    running = queue.claim_next(site.sessions, "hostx:41:w1")  # held by a worker now
    site.submission("a@example.org", SANITY)  # queued behind it
    with db.transaction(site.sessions) as session:  # one of yesterday's, outside the last 24 hours
        old = session.get(Submission, 1)
        old.created_at = old.created_at - dt.timedelta(days=2)
    page = site.client(ORGANIZER).get(f"/admin/phases/{SANITY}")
    shown = {k: html.unescape(re.sub(r"<[^>]+>", "", v)).strip()
             for k, v in re.findall(r'data-field="(\w+)"[^>]*>(.*?)</(?:span|p)>', page.get_data(as_text=True), re.S)}
    assert shown["submissions_today"] == "3" and shown["submissions"] == "4 from 2 teams"
    assert shown["finished_today"] == "1 failed, 1 succeeded" and shown["pending"] == "1 / 1"
    assert shown["failures"].startswith("Failures in the last 24 h by reason: time_limit 1")
    rows = [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in re.findall(r"<tr>(.*?)</tr>", page.get_data(as_text=True).split('id="workers"')[1].split("</table>")[0], re.S)]
    assert [r[0] for r in rows if r] == [running.worker_id] and [r[2] for r in rows if r] == ["1"]
    assert site.client("a@example.org").get(f"/admin/phases/{SANITY}").status_code == 403
