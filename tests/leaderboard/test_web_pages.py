"""The web pages through Flask's test client, on the service's records: the overview from
the challenge definition and docs/submission.md, leaderboards (values, ranking methods,
who sees which phase, the final phase before and after publishing), teams and
invitations, uploads, the team's submissions with live status, cancel, the submission
detail, and the organizer's pages."""
from __future__ import annotations

import csv
import html
import io
import re

import pytest
from sqlalchemy import func, select

from iugc.data_manifest.phantom import write_phantom_dataset
from iugc.submissions import challenges, db, queue, teams
from iugc.submissions.models import AuditEntry, Membership, Submission, Team
from tests.service_support import database_url, postgres_cluster  # noqa: F401 (fixtures)
from tests.web_support import FAIR, FINAL, GOOD, ORGANIZER, PASSWORD, SANITY, VALIDATION, Client, open_site, psfhs_score

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")


@pytest.fixture
def site(database_url, tmp_path):
    """A fresh site, on SQLite and on PostgreSQL."""
    yield from open_site(tmp_path, database_url)


def text(response) -> str:
    """The page's text: tags removed, whitespace collapsed."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def table_rows(response, table_id: str) -> list[list[str]]:
    """The body rows of a table as lists of cell texts."""
    page = response.get_data(as_text=True)
    body = page.split(f'id="{table_id}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        cells = [re.sub(r'<span class="badge">[^<]*</span>', "", c) for c in cells]  # "your team"
        rows.append([html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", c))).strip() for c in cells])
    return rows


def test_the_overview_shows_the_challenge_its_phases_and_how_to_submit(site):
    page = text(site.client().get("/"))
    assert "PSFHS 2023: Pubic Symphysis-Fetal Head Segmentation and Angle of Progression" in page
    for phase in ("sanity-check", "validation", "final-test"):
        assert phase in page
    assert "0.25*mDice + 0.125*(1 - mHD/100)" in page  # the score formula, from the definition
    assert "per-case values shown" in page and "aggregates only" in page
    assert "5 min" in page and "8 GB" in page  # sanity-check limits: 300 s, 8192 MB
    assert "no cases yet" in page and "Five" not in page  # numbers come from the phase, not from prose
    folder = site.tmp / "phantoms"
    write_phantom_dataset(folder, 7, seed=0, size=64)
    with db.transaction(site.sessions) as session:
        challenges.add_dataset(session, SANITY, folder)
    assert "7 cases" in text(site.client().get("/"))
    assert "How to build a submission" in page and "iugc docker build-baseline" in page
    guide = site.client().get("/how-to-submit/contract")
    assert "What the sandbox enforces" in text(guide)  # rendered from docs/submission.md
    assert "<strong>What the sandbox enforces</strong>" in guide.get_data(as_text=True)
    assert '<h2 id="the-container">The container</h2>' in guide.get_data(as_text=True)


def test_the_overview_shows_a_members_quota_left(site):
    site.person("a@example.org", "alpha")
    site.submission("a@example.org", SANITY)
    client = site.client("a@example.org")
    rows = table_rows(client.get("/"), "phases-svc")
    assert [r[0].split()[0] for r in rows] == ["sanity-check", "validation", "final-test"]
    assert [r[9] for r in rows] == ["4", "5", "5"]  # 5 a day; one used in sanity-check


def _two_teams(site, slug):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    fair = site.submission("b@example.org", slug, FAIR)
    good = site.submission("a@example.org", slug, GOOD)
    return good, fair


def test_the_leaderboard_shows_rank_team_score_and_every_metric(site):
    _two_teams(site, VALIDATION)
    response = site.client("b@example.org").get(f"/leaderboard/{VALIDATION}")
    assert response.status_code == 200
    head = re.findall(r"<th[^>]*>(.*?)</th>", response.get_data(as_text=True).split('id="leaderboard"')[1].split("</thead>")[0], re.S)
    labels = [html.unescape(re.sub(r"<[^>]+>", "", h)).strip() for h in head]
    assert labels == ["Rank", "Team", "Score ↑", "Dice PS ↑", "Dice FH ↑", "Dice all ↑", "HD (px) ↓", "ASD (px) ↓", "ΔAoP (°) ↓", "Cases",
                      "Submitted (UTC)", "Scored", "Evaluated (UTC)"]
    rows = table_rows(response, "leaderboard")
    site.submission("a@example.org", VALIDATION)  # two more of alpha's: one is scored (FAIR, not its best) and
    site.submission("a@example.org", VALIDATION, FAIR)  # counts, one stays queued and does not
    with site.sessions() as session:
        created = {s.id: s.created_at for s in session.execute(select(Submission).order_by(Submission.id)).scalars()}
    fair, good = list(created)[:2]
    again = table_rows(site.client("b@example.org").get(f"/leaderboard/{VALIDATION}"), "leaderboard")
    assert [r[-3:-1] for r in again] == [[created[good].strftime("%Y-%m-%d %H:%M"), "2"], [created[fair].strftime("%Y-%m-%d %H:%M"), "1"]]
    assert [r[:2] for r in rows] == [["1", "alpha"], ["2", "beta"]]
    assert re.search(r'<tr class="mine">.*?beta <span class="badge">your team</span>', response.get_data(as_text=True), re.S)
    assert rows[0][2] == f"{psfhs_score(GOOD):.4f}" and rows[1][2] == f"{psfhs_score(FAIR):.4f}"
    assert rows[0][3:9] == ["0.850", "0.930", "0.920", "10.000", "3.000", "6.000"]
    assert rows[1][5:9] == ["0.810", "20.000", "6.000", "12.000"]


def test_ties_share_a_rank_and_missing_values_show_a_dash(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    site.submission("a@example.org", VALIDATION, GOOD)
    site.submission("b@example.org", VALIDATION, {**GOOD, "dice_ps": None})
    rows = table_rows(site.client(ORGANIZER).get(f"/leaderboard/{VALIDATION}"), "leaderboard")
    assert sorted(r[0] for r in rows) == ["1=", "1="]
    beta = next(r for r in rows if r[1].startswith("beta"))
    assert beta[3] == "—"


def test_the_ranking_method_switch(site):
    _two_teams(site, VALIDATION)
    client = site.client("a@example.org")
    mean_rank = client.get(f"/leaderboard/{VALIDATION}?method=mean-rank")
    assert "Mean rank" in text(mean_rank)
    rows = table_rows(mean_rank, "leaderboard")
    # alpha is better on dice, hd, asd and aop_error: rank 1 on each, mean rank 1.0; beta 2.0
    assert [(r[0], r[1], r[3]) for r in rows] == [("1", "alpha", "1.000"), ("2", "beta", "2.000")]
    assert "Mean rank" not in text(client.get(f"/leaderboard/{VALIDATION}?method=score"))
    bad = client.get(f"/leaderboard/{VALIDATION}?method=coin-toss")
    assert bad.status_code == 400 and "ranking method must be one of score, mean-rank" in text(bad)


def test_anonymous_visitors_see_every_board_but_a_final_test_not_yet_published(site):
    """As on grand-challenge.org and Codabench: the validation leaderboard is public (the
    overview says so); the final test's results wait for the organizers."""
    _two_teams(site, VALIDATION)
    site.submission("b@example.org", FINAL, FAIR)
    site.submission("a@example.org", FINAL, GOOD)
    anonymous = site.client()
    shown = anonymous.get(f"/leaderboard/{VALIDATION}")
    assert shown.status_code == 200 and [r[1] for r in table_rows(shown, "leaderboard")] == ["alpha", "beta"]
    index = anonymous.get("/leaderboard").get_data(as_text=True)
    assert f'href="/leaderboard/{VALIDATION}"' in index and f'href="/leaderboard/{FINAL}"' not in index
    assert "results hidden until the organizers publish them" in text(anonymous.get("/leaderboard"))
    hidden = anonymous.get(f"/leaderboard/{FINAL}")
    assert hidden.status_code == 403 and "not published yet" in text(hidden)
    organizer = site.client(ORGANIZER)
    assert "hidden from participants" in text(organizer.get("/admin"))
    assert organizer.form(f"/admin/phases/{FINAL}/publish", page="/admin").status_code == 302
    assert [r[1] for r in table_rows(anonymous.get(f"/leaderboard/{FINAL}"), "leaderboard")] == ["alpha", "beta"]
    assert anonymous.get("/leaderboard/no-such-phase").status_code == 404


def test_the_final_phase_is_hidden_from_participants_until_published(site):
    _two_teams(site, FINAL)
    alpha = site.client("a@example.org")
    before = alpha.get(f"/leaderboard/{FINAL}")
    assert before.status_code == 403 and "not published yet" in text(before)
    sid = alpha.get("/submissions/status.json").json["submissions"][0]
    assert sid["status"] == "succeeded" and sid["score"] is None and sid["results_hidden"]
    assert "hidden until published" in text(alpha.get("/submissions"))
    organizer = site.client(ORGANIZER)
    seen = organizer.get(f"/leaderboard/{FINAL}")
    assert seen.status_code == 200 and "Not published: only organizers see this" in text(seen)
    assert [r[1].split()[0] for r in table_rows(seen, "leaderboard")] == ["alpha", "beta"]
    assert organizer.form(f"/admin/phases/{FINAL}/publish", page="/admin").status_code == 302
    after = alpha.get(f"/leaderboard/{FINAL}")
    assert after.status_code == 200 and [r[1] for r in table_rows(after, "leaderboard")] == ["alpha", "beta"]
    assert alpha.get("/submissions/status.json").json["submissions"][0]["score"] == pytest.approx(psfhs_score(GOOD))
    assert site.client().get(f"/leaderboard/{FINAL}").status_code == 200  # published: public too
    with site.sessions() as session:
        assert session.execute(select(AuditEntry.action).where(AuditEntry.target == f"phase:{FINAL}")).scalars().all() == ["phase.publish"]
    # published by mistake: hidden again, from the page (it asks first) and through the same rule as `iugc admin unpublish`
    admin_page = organizer.get("/admin").get_data(as_text=True)
    assert f'data-confirm="Hide the results of {FINAL} again? Participants will no longer see its leaderboard."' in admin_page
    assert organizer.form(f"/admin/phases/{FINAL}/unpublish", page="/admin").status_code == 302
    hidden = alpha.get(f"/leaderboard/{FINAL}")  # the kept board follows at once
    assert hidden.status_code == 403 and alpha.get("/submissions/status.json").json["submissions"][0]["score"] is None
    assert site.client().get(f"/leaderboard/{FINAL}").status_code == 403
    assert f'action="/admin/phases/{FINAL}/publish"' in organizer.get("/admin").get_data(as_text=True)
    with site.sessions() as session:
        actions = session.execute(select(AuditEntry.action).where(AuditEntry.target == f"phase:{FINAL}")).scalars().all()
    assert actions == ["phase.publish", "phase.unpublish"]


def test_create_a_team_invite_by_link_join_and_leave(site):
    site.person("a@example.org")
    site.person("b@example.org")
    alpha = site.client("a@example.org")
    assert alpha.form("/teams/create", {"name": "alpha", "challenge": "svc"}, page="/teams").status_code == 302
    page = alpha.get("/teams").get_data(as_text=True)
    link = re.search(r'<pre class="copyable invite">http://localhost(/teams/join/[^<]+)</pre>', page).group(1)
    taken = alpha.form("/teams/create", {"name": "again", "challenge": "svc"}, page="/teams")
    assert taken.status_code == 400 and "already in a team of svc" in text(taken)
    beta = site.client("b@example.org")
    invitation = beta.get(link)
    assert invitation.status_code == 200 and "Join alpha" in text(invitation) and "a@example.org" in text(invitation)
    assert beta.form(link, page=link).status_code == 302
    members = text(alpha.get("/teams"))
    assert "a@example.org" in members and "b@example.org" in members
    assert beta.get(link[:-3] + "xyz").status_code == 400  # a tampered link
    with site.sessions() as session:
        team_id = session.execute(select(Team.id).where(Team.name == "alpha")).scalar()
    assert beta.form(f"/teams/{team_id}/leave", page="/teams").status_code == 302
    with site.sessions() as session:
        assert session.execute(select(func.count()).select_from(Membership).where(Membership.team_id == team_id)).scalar() == 1
        actions = session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars().all()
    assert actions[-3:] == ["team.create", "team.join", "team.leave"]


def test_an_invitee_who_registers_from_the_invitation_comes_back_to_it(site):
    site.person("a@example.org")
    alpha = site.client("a@example.org")
    alpha.form("/teams/create", {"name": "alpha", "challenge": "svc"}, page="/teams")
    link = re.search(r'<pre class="copyable invite">http://localhost(/teams/join/[^<]+)</pre>',
                     alpha.get("/teams").get_data(as_text=True)).group(1)
    visitor = site.client()
    asked = visitor.get(link)
    assert asked.status_code in (302, 401, 403)
    login_page = visitor.get(f"/login?next={link}").get_data(as_text=True)
    register = html.unescape(re.search(r'<a href="(/register[^"]*)">Register</a>', login_page).group(1))
    assert register == f"/register?next={link.replace('/', '%2F')}" or register == f"/register?next={link}"
    registered = visitor.http.post(register, data={"email": "new@example.org", "password": "a long enough password",
                                                   "confirm": "a long enough password", "csrf_token": visitor.token(register)})
    assert registered.status_code == 302 and registered.headers["Location"].endswith(link)  # the invitation, not the team page
    assert "Join alpha" in text(visitor.get(link))
    assert visitor.form(link, page=link).status_code == 302
    assert "new@example.org" in text(alpha.get("/teams"))


def test_an_expired_invitation_is_refused(site, monkeypatch):

    site.person("a@example.org", "alpha")
    site.person("b@example.org")
    with site.sessions() as session:
        team_id = session.execute(select(Team.id)).scalar()
    token = teams.invitation_token(site.app.secret_key, team_id)
    monkeypatch.setattr(teams, "INVITE_DAYS", -1)
    refused = site.client("b@example.org").get(f"/teams/join/{token}")
    assert refused.status_code == 400 and "ask the team for a new link" in text(refused)


def test_upload_through_the_page_queues_a_submission(site):
    site.person("a@example.org", "alpha")
    client = site.client("a@example.org")
    page = client.get(f"/phases/{SANITY}/upload")
    assert "5 of 5 submissions left" in text(page) and f"iugc submit --phase {SANITY}" in text(page)
    token = client.token(f"/phases/{SANITY}/upload")
    archive = site.archive()
    response = client.post(f"/phases/{SANITY}/upload", data={"csrf_token": token, "image": (open(archive, "rb"), "model.tar")},
                           content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert response.status_code == 202 and response.json["status"] == "queued"
    sid = response.json["id"]
    assert response.json["url"] == f"/submissions?highlight={sid}"
    again = client.post(f"/phases/{SANITY}/upload", data={"csrf_token": token, "image": (open(archive, "rb"), "model.tar")},
                        content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert again.status_code == 409 and f"already submitted to {SANITY} as submission {sid}" in again.json["error"]
    plain = client.post(f"/phases/{SANITY}/upload", data={"csrf_token": token, "image": (open(site.archive(), "rb"), "m.tar")},
                        content_type="multipart/form-data")
    assert plain.status_code == 302
    with site.sessions() as session:
        assert session.execute(select(func.count()).select_from(Submission)).scalar() == 2


def test_an_upload_over_quota_tells_the_page_script_when_to_try_again(site):
    """The upload page's script asks for JSON: it gets the API's answer, Retry-After included."""
    site.person("a@example.org", "alpha")
    for _ in range(5):  # the sanity-check phase's quota
        site.submission("a@example.org", SANITY)
    client = site.client("a@example.org")
    refused = client.post(f"/phases/{SANITY}/upload", data={"csrf_token": client.token(), "image": (open(site.archive(), "rb"), "m.tar")},
                          content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert refused.status_code == 429 and "frees up at" in refused.json["error"]
    assert refused.json["retry_after"] and int(refused.headers["Retry-After"]) > 3600
    assert site.service.counts()["submissions"] == 5


@pytest.mark.parametrize("case", ["no file", "not an archive", "no team"])
def test_a_refused_upload_says_why_and_keeps_nothing(site, case):
    site.person("a@example.org", None if case == "no team" else "alpha")
    client = site.client("a@example.org")
    token = client.token()
    bad = site.tmp / "bad.tar"
    bad.write_bytes(b"this is not a tar file")
    files = {} if case == "no file" else {"image": (open(bad if case == "not an archive" else site.archive(), "rb"), "x.tar")}
    response = client.post(f"/phases/{SANITY}/upload", data={"csrf_token": token, **files}, content_type="multipart/form-data",
                           headers={"Accept": "application/json"})
    expected = {"no file": (400, "choose a `docker save` archive"), "not an archive": (422, "tar"),
                "no team": (403, "you are in no team of svc")}[case]
    assert response.status_code == expected[0] and expected[1] in response.json["error"]
    assert site.service.counts()["submissions"] == 0 and site.service.counts()["stored"] == []
    html_page = client.post(f"/phases/{SANITY}/upload", data={"csrf_token": token}, content_type="multipart/form-data")
    assert html_page.status_code == 400 and "choose a `docker save` archive" in text(html_page)


def test_my_submissions_show_queue_position_status_and_runtime_then_the_score(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    first = site.submission("b@example.org", SANITY)
    mine = site.submission("a@example.org", SANITY)
    client = site.client("a@example.org")
    rows = client.get("/submissions/status.json").json["submissions"]
    assert [(r["id"], r["status"], r["queue_position"], r["runtime_seconds"]) for r in rows] == [(mine, "queued", 2, None)]
    page = client.get(f"/submissions?highlight={mine}")
    assert f'<tr data-id="{mine}" class="highlight">' in page.get_data(as_text=True)
    job = queue.claim_next(site.sessions, "w:1:x")
    assert job.evaluation_id and queue.claim_next(site.sessions, "w:2:x") is not None  # both teams run
    row = client.get("/submissions/status.json").json["submissions"][0]
    assert row["status"] == "running" and row["queue_position"] is None and row["runtime_seconds"] >= 0
    with site.sessions() as session:
        other = [e for s in session.execute(select(Submission)).scalars() for e in s.evaluations if s.id == mine][0]
    held = queue.Job(other.id, other.worker_id, "", None, {}, "", {}, None, None)
    assert queue.finish(site.sessions, held, {"status": "failed", "failure": "time_limit", "error": "the run took longer than 300 s"})
    row = client.get("/submissions/status.json").json["submissions"][0]
    assert (row["status"], row["done"], row["failure"], row["error"]) == ("failed", True, "time_limit", "the run took longer than 300 s")
    assert row["logs"] is None
    assert "time_limit" in text(client.get("/submissions")) and first not in [r["id"] for r in client.get("/submissions/status.json").json["submissions"]]


def test_cancel_a_queued_submission(site):
    site.person("a@example.org", "alpha")
    sid = site.submission("a@example.org", SANITY)
    client = site.client("a@example.org")
    assert client.form(f"/submissions/{sid}/cancel").status_code == 302
    assert client.get("/submissions/status.json").json["submissions"][0]["status"] == "cancelled"
    again = client.form(f"/submissions/{sid}/cancel")
    assert again.status_code == 400 and "already cancelled" in text(again)


def test_the_detail_page_shows_aggregates_and_per_case_values_where_the_phase_allows(site):
    site.person("a@example.org", "alpha")
    # as psfhs2023's results are: HSD keys present but always empty (the challenge does not define HSD)
    cases = {"03744": {"dice_all": 0.91, "aop_error": 4.5, "hsd_pred": None, "hsd_error": None, "error": None},
             "03745": {"dice_all": 0.42, "aop_error": 31.0, "hsd_pred": None, "hsd_error": None, "error": "missing mask"}}
    public = site.submission("a@example.org", SANITY, {**GOOD, "hsd_error": None}, cases)
    hidden = site.submission("a@example.org", VALIDATION, GOOD, cases)
    client = site.client("a@example.org")
    page = client.get(f"/submissions/{public}")
    assert page.status_code == 200 and f"{psfhs_score(GOOD):.4f}" in text(page)
    rows = table_rows(page, "cases")
    assert rows == [["03744", "0.910", "4.500", ""], ["03745", "0.420", "31.000", "missing mask"]]  # only the columns present
    assert "Dice all" in text(page) and "ΔAoP (°)" in text(page) and "Segmented cases" not in text(page)
    assert "HSD" not in text(page) and "hsd" not in text(page)  # no column, card or aggregate row the challenge does not define
    other = client.get(f"/submissions/{hidden}")
    assert other.status_code == 200 and "does not show per-case values" in text(other) and 'id="cases"' not in other.get_data(as_text=True)
    assert 'id="cases"' in site.client(ORGANIZER).get(f"/submissions/{hidden}").get_data(as_text=True)


def test_organizers_export_the_leaderboard_as_csv_and_json(site):
    good, fair = _two_teams(site, VALIDATION)
    with db.transaction(site.sessions) as session:
        session.get(Team, session.execute(select(Team.id).where(Team.name == "beta")).scalar()).name = "=cmd|calc"
    organizer = site.client(ORGANIZER)
    as_json = organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.json")
    assert as_json.status_code == 200 and "attachment" in as_json.headers["Content-Disposition"]
    assert [(r["team"], r["submission"], r["rank"]) for r in as_json.json["rows"]] == [("alpha", good, 1), ("=cmd|calc", fair, 2)]
    assert as_json.json["rows"][0]["score"] == pytest.approx(psfhs_score(GOOD))
    rows = list(csv.DictReader(io.StringIO(organizer.get(f"/admin/phases/{VALIDATION}/leaderboard.csv").get_data(as_text=True))))
    assert [(r["team"], r["rank"]) for r in rows] == [("alpha", "1"), ("'=cmd|calc", "2")]
    assert float(rows[0]["hd"]) == 10.0 and float(rows[1]["aop_error"]) == 12.0


def test_the_admin_page_lists_phases_the_queue_and_the_audit_log(site):
    site.person("a@example.org", "alpha")
    site.submission("a@example.org", SANITY)
    organizer = site.client(ORGANIZER)
    page = text(organizer.get("/admin"))
    assert SANITY in page and "queued 1" in page and "none" in page  # no dataset registered yet
    audit = text(organizer.get("/admin/audit"))
    assert "submission.create" in audit and "challenge.init" in audit and "a@example.org" in audit
    assert organizer.form(f"/admin/phases/{SANITY}/reevaluate", page="/admin").status_code == 302  # the queued one is skipped
    with site.sessions() as session:
        assert session.execute(select(AuditEntry.action).order_by(AuditEntry.id.desc())).scalars().first() == "phase.reevaluate"


def test_the_audit_log_reads_as_text_filters_and_exports_as_csv(site):
    from iugc.submissions import disqualification

    site.person("a@example.org", "alpha")
    sid = site.submission("a@example.org", SANITY)
    organizer_id = site.user_id(ORGANIZER)
    with db.transaction(site.sessions) as session:
        disqualification.disqualify_submission(session, sid, "=copied <b>another</b> team's model", organizer_id)
    organizer = site.client(ORGANIZER)
    body = organizer.get("/admin/audit").get_data(as_text=True)
    assert "reason:</span> =copied &lt;b&gt;another&lt;/b&gt; team&#39;s model" in body and "\\u003c" not in body  # text, escaped once
    only = table_rows(organizer.get("/admin/audit?action=submission."), "audit")
    assert [row[2] for row in only] == ["submission.disqualify", "submission.create"]
    by_commands = table_rows(organizer.get("/admin/audit?actor=system"), "audit")
    assert by_commands and {row[1] for row in by_commands} == {"system"} and "challenge.init" in {row[2] for row in by_commands}
    assert "No entry matches." in text(organizer.get("/admin/audit?action=nothing"))
    exported = organizer.get("/admin/audit.csv?action=submission.disqualify")
    assert exported.status_code == 200 and "attachment" in exported.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(exported.get_data(as_text=True))))
    assert rows[0] == ["at_utc", "actor", "action", "target", "detail"] and len(rows) == 2
    assert rows[1][1:4] == [ORGANIZER, "submission.disqualify", f"submission:{sid}"]
    assert "reason: =copied <b>another</b> team's model" in rows[1][4]
    assert site.client("a@example.org").get("/admin/audit.csv").status_code == 403  # organizers only


def test_a_new_token_comes_with_the_submit_command_and_works_on_the_api(site):
    site.person("a@example.org", "alpha")
    client = site.client("a@example.org")
    page = client.form("/account/token", {"phase": SANITY}, page=f"/phases/{SANITY}/upload")
    body = text(page)
    token = re.search(r"export IUGC_TOKEN=(iugc_\S+)", body).group(1)
    assert f"iugc submit --phase {SANITY} --image" in body and page.headers["Cache-Control"] == "no-store"
    assert site.app.test_client().get("/api/v1/phases", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert token not in text(client.get("/account"))  # shown once


def test_a_revoked_token_stops_working_at_once_and_only_its_owner_can_revoke_it(site):
    from iugc.submissions import accounts
    from iugc.submissions.models import ApiToken

    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    with db.transaction(site.sessions) as session:
        token = accounts.issue_token(session, "a@example.org")
    with site.sessions() as session:
        token_id = session.execute(select(ApiToken.id)).scalar_one()
    api = site.app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/phases", headers=bearer).status_code == 200
    owner, other = site.client("a@example.org"), site.client("b@example.org")
    assert other.form(f"/account/tokens/{token_id}/revoke", page="/account").status_code == 404  # not theirs
    assert api.get("/api/v1/phases", headers=bearer).status_code == 200
    account = owner.get("/account").get_data(as_text=True)
    assert f'action="/account/tokens/{token_id}/revoke"' in account and "stop working at once" in account
    done = owner.form(f"/account/tokens/{token_id}/revoke", page="/account")
    assert done.status_code == 302
    refused = api.get("/api/v1/phases", headers=bearer)
    assert refused.status_code == 401 and "create a new one on the site's Account page" in refused.json["error"]
    assert "revoked" in text(owner.get("/account")) and f'tokens/{token_id}/revoke"' not in owner.get("/account").get_data(as_text=True)
    with site.sessions() as session:
        assert session.execute(select(AuditEntry.action).order_by(AuditEntry.id.desc())).scalars().first() == "token.revoke"


@pytest.fixture
def two_evaluated(site, tmp_path):
    """Two teams whose sanity-check results are real evaluations of degraded phantom masks."""
    import cv2
    import numpy as np

    from iugc.challenge.definition import load_challenge
    from iugc.data_manifest.io import read_mask
    from iugc.data_manifest.manifest import load_manifest
    from iugc.data_manifest.phantom import write_phantom_dataset
    from iugc.evaluator.evaluate import evaluate_folder

    truth = tmp_path / "truth"
    write_phantom_dataset(truth, 12, seed=0, nonstandard_fraction=0.0)
    results = {}
    for team, iterations in (("alpha", 1), ("beta", 3)):
        folder = tmp_path / team
        folder.mkdir()
        for case in load_manifest(truth).cases:
            mask = cv2.erode(read_mask(truth / case.mask), np.ones((3, 3), np.uint8), iterations=iterations)
            cv2.imwrite(str(folder / f"{case.case_id}.png"), mask)
        results[team] = evaluate_folder(folder, truth, load_challenge("psfhs2023"),
                                        progress=False, cache_dir=tmp_path / "cache")
        site.person(f"{team}@example.org", team)
        site.submission(f"{team}@example.org", SANITY, results[team]["aggregates"], results[team]["cases"])
    return results


def test_the_leaderboard_shows_rank_stability_and_pairwise_significance_from_the_evaluator(site, two_evaluated, monkeypatch):
    from iugc.challenge.definition import load_challenge
    from iugc.evaluator.ranking import bootstrap_ranks, wilcoxon_significance
    from iugc.leaderboard.web import charts

    definition = load_challenge("psfhs2023")  # the svc test challenge is psfhs2023 renamed
    expected = bootstrap_ranks(two_evaluated, definition, "score", definition.ranking.bootstrap_samples, seed=0)
    p_value = wilcoxon_significance(two_evaluated, definition)["p_values"]["alpha"]["beta"]
    client = site.client("alpha@example.org")
    page = client.get(f"/leaderboard/{SANITY}")
    rows = table_rows(page, "bootstrap")
    assert [(r[0], r[3]) for r in rows] == [(t, f"{expected['teams'][t]['p_first']:.3f}") for t in ("alpha", "beta")]
    assert p_value < 0.0005  # too small for three decimals: the page says so rather than 0.000
    assert table_rows(page, "significance") == [["", "< 0.001"], ["< 0.001", ""]]  # row headers are <th>
    svg = client.get(f"/leaderboard/{SANITY}/stability.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml" and b"<svg" in svg.data
    assert b">rank 1<" in svg.data and b">rank 2<" in svg.data and b"colour: the rank a team got" in svg.data  # a legend
    assert site.client().get(f"/leaderboard/{SANITY}/stability.svg").data == svg.data  # public to visitors too
    monkeypatch.setattr(charts, "bootstrap_ranks", lambda *a, **k: pytest.fail("recomputed although cached"))
    assert client.get(f"/leaderboard/{SANITY}").status_code == 200
    assert client.get(f"/leaderboard/{SANITY}/stability.svg").data == svg.data


def test_the_test_then_rank_tab_ranks_by_paired_wilcoxon_tests_on_the_per_case_values(site, two_evaluated):
    """PSFHS 2023's final ranking rule on the page (it was an HTTP 500): a team's rank on a
    metric is 1 + the teams significantly better (one-sided Wilcoxon, alpha 0.05), ordered by
    the mean of those ranks. The oracle: scipy.stats.wilcoxon on the per-case values."""
    import numpy as np
    from scipy.stats import wilcoxon

    from iugc.challenge.definition import METRIC_DIRECTIONS, load_challenge

    definition = load_challenge("psfhs2023")
    cases = sorted(two_evaluated["alpha"]["cases"])

    def per_case(team, metric):
        values = two_evaluated[team]["cases"]
        if metric == "aop_error":
            return np.array([values[c]["aop_error"] for c in cases], float)
        return np.array([np.mean([values[c][f"{metric}_ps"], values[c][f"{metric}_fh"]]) for c in cases], float)

    ranks, p_better = {"alpha": [], "beta": []}, {}
    for metric in definition.ranking.mean_rank_metrics:
        a, b = per_case("alpha", metric), per_case("beta", metric)
        better = "greater" if METRIC_DIRECTIONS[metric] else "less"
        p_better[metric] = (wilcoxon(a, b, alternative=better).pvalue, wilcoxon(b, a, alternative=better).pvalue)
        ranks["alpha"].append(1 + int(wilcoxon(b, a, alternative=better).pvalue < definition.ranking.alpha))
        ranks["beta"].append(1 + int(wilcoxon(a, b, alternative=better).pvalue < definition.ranking.alpha))
    expected = sorted(((float(np.mean(r)), team) for team, r in ranks.items()))
    assert expected[0][1] == "alpha" and expected[0][0] < expected[1][0]  # the fixture's alpha eroded less
    page = site.client("alpha@example.org").get(f"/leaderboard/{SANITY}?method=test-then-rank")
    assert page.status_code == 200 and "Test, then rank" in text(page)
    assert "a team's rank is 1 + the number of teams significantly better on the same cases" in text(page)  # the tab says how
    assert "mean of those ranks, lowest first" in text(site.client("alpha@example.org").get(f"/leaderboard/{SANITY}?method=mean-rank"))
    rows = table_rows(page, "leaderboard")
    header = [h for h in re.findall(r"<th[^>]*>(.*?)</th>", page.get_data(as_text=True).split('id="leaderboard"', 1)[1])]
    mean_rank = next(i for i, h in enumerate(header) if "Mean rank" in h)
    assert [(r[1].split()[0], r[mean_rank]) for r in rows] == [(team, f"{value:.3f}") for value, team in expected]
    # the matrices are the ranking's own one-sided tests, read "row better than column", with each column's rank
    assert "row better than column" in page.get_data(as_text=True) and 'id="significance"' not in page.get_data(as_text=True)

    def shown(p):
        return "< 0.001" if p < 0.0005 else f"{p:.3f}"

    for i, metric in enumerate(definition.ranking.mean_rank_metrics):
        a_better, b_better = p_better[metric]
        assert table_rows(page, f"tests-{metric}") == [["", shown(a_better)], [shown(b_better), ""],
                                                       [str(ranks["alpha"][i]), str(ranks["beta"][i])]]


def test_a_board_opens_on_its_phases_ranking_method(site, two_evaluated):
    """psfhs2023's final test ranks by test-then-rank, its other phases by score: each
    board's first tab is its own method, marked; one that cannot rank by it yet (no
    per-case values) is shown by score with a sentence saying so, never an error."""
    with db.transaction(site.sessions) as session:
        challenges.publish(session, FINAL)
    for team in ("alpha", "beta"):  # the same real evaluations, now in the final test
        site.submission(f"{team}@example.org", FINAL, two_evaluated[team]["aggregates"], two_evaluated[team]["cases"])
    final = text(site.client().get(f"/leaderboard/{FINAL}"))
    assert "row better than column" in final and "Shown by score" not in final  # the test-then-rank tab
    assert re.search(r'class="on">Test, then rank \(significance\) <span[^>]*>· this phase', site.client().get(f"/leaderboard/{FINAL}").get_data(as_text=True))
    sanity = site.client().get(f"/leaderboard/{SANITY}").get_data(as_text=True)
    assert re.search(r'class="on">Aggregate, then rank \(score\) <span[^>]*>· this phase', sanity)
    assert "this phase's ranking" not in sanity.split("Test, then rank")[1].split("</a>")[0]
    with db.transaction(site.sessions) as session:
        challenges.publish(session, VALIDATION)
    site.person("c@example.org", "gamma")
    site.submission("c@example.org", FINAL, FAIR)  # scored without per-case values: test-then-rank cannot rank it
    page = site.client().get(f"/leaderboard/{FINAL}")
    assert page.status_code == 200
    assert "Shown by score: this phase ranks by test-then-rank, which cannot rank these results yet" in text(page)
    assert [r[1].split()[0] for r in table_rows(page, "leaderboard")][-1] == "gamma"  # FAIR scores lowest
    asked = site.client().get(f"/leaderboard/{FINAL}?method=test-then-rank")
    assert asked.status_code == 400 and "cannot be ranked by test-then-rank" in text(asked)  # asked for by name: the reason


def test_test_then_rank_without_per_case_values_says_why(site):
    _two_teams(site, VALIDATION)
    page = site.client("a@example.org").get(f"/leaderboard/{VALIDATION}?method=test-then-rank")
    assert page.status_code == 400 and "cannot be ranked by test-then-rank" in text(page)


def test_no_stability_analysis_without_per_case_values(site):
    _two_teams(site, VALIDATION)
    client = site.client("a@example.org")
    assert 'id="bootstrap"' not in client.get(f"/leaderboard/{VALIDATION}").get_data(as_text=True)
    missing = client.get(f"/leaderboard/{VALIDATION}/stability.svg")
    assert missing.status_code == 404 and "needs two ranked teams with per-case values" in text(missing)


def test_an_organizer_re_evaluates_one_submission_keeping_the_old_evaluation(site):
    site.person("a@example.org", "alpha")
    sid = site.submission("a@example.org", SANITY, GOOD)
    organizer = site.client(ORGANIZER)
    assert 'action="/admin/submissions/%d/reevaluate"' % sid in organizer.get(f"/submissions/{sid}").get_data(as_text=True)
    assert 'reevaluate' not in site.client("a@example.org").get(f"/submissions/{sid}").get_data(as_text=True)
    assert organizer.form(f"/admin/submissions/{sid}/reevaluate", page="/admin").status_code == 302
    with site.sessions() as session:
        evaluations = session.get(Submission, sid).evaluations
        assert [(e.number, e.status.value) for e in evaluations] == [(1, "succeeded"), (2, "queued")]
    again = organizer.form(f"/admin/submissions/{sid}/reevaluate", page="/admin")
    assert again.status_code == 302 and "still pending" in text(organizer.get(f"/submissions/{sid}"))
    assert organizer.form("/admin/submissions/999/reevaluate", page="/admin").status_code == 404
    team_page = text(site.client("a@example.org").get(f"/submissions/{sid}"))
    assert "Re-evaluation (evaluation 2) is queued. The result below stands" in team_page and "No result yet" not in team_page
    assert organizer.form(f"/submissions/{sid}/cancel", page="/admin").status_code == 302  # organizers cancel too
    with site.sessions() as session:
        submission = session.get(Submission, sid)
        assert submission.evaluations[-1].status.value == "cancelled"
        assert (submission.status.value, submission.counts_against_quota) == ("succeeded", True)  # the result stands
    team_page = text(site.client("a@example.org").get(f"/submissions/{sid}"))
    assert "Re-evaluation (evaluation 2) was cancelled. The result below stands" in team_page
    assert f"Score {psfhs_score(GOOD):.4f}" in team_page and "Counts against quota yes" in team_page
    (row,) = table_rows(site.client().get(f"/leaderboard/{SANITY}"), "leaderboard")
    with site.sessions() as session:
        finished = session.get(Submission, sid).evaluations[0].finished_at
    assert row[-1].startswith(finished.strftime("%Y-%m-%d %H:%M"))  # the row names the evaluation it comes from


def test_the_kept_leaderboard_follows_new_results_and_still_checks_who_sees_it(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    site.submission("b@example.org", FINAL, FAIR)
    organizer, alpha = site.client(ORGANIZER), site.client("a@example.org")
    assert [r[1].split()[0] for r in table_rows(organizer.get(f"/leaderboard/{FINAL}"), "leaderboard")] == ["beta"]
    assert alpha.get(f"/leaderboard/{FINAL}").status_code == 403  # kept for the organizer, still hidden from her
    assert site.client().get(f"/leaderboard/{FINAL}").status_code == 403
    site.submission("a@example.org", FINAL, GOOD)
    rows = table_rows(organizer.get(f"/leaderboard/{FINAL}"), "leaderboard")
    assert [r[1].split()[0] for r in rows] == ["alpha", "beta"] and rows[0][2] == f"{psfhs_score(GOOD):.4f}"


def test_a_page_refused_to_a_visitor_offers_to_log_in_and_come_back(site):
    refused = site.client().get(f"/leaderboard/{FINAL}")
    assert refused.status_code == 403 and "not published yet" in text(refused)
    body = refused.get_data(as_text=True)
    assert f'href="/login?next=/leaderboard/{FINAL}"' in body
    assert 'rel="icon"' in body and site.client().get("/static/favicon.svg").status_code == 200
    site.person("a@example.org", "alpha")
    member = site.client("a@example.org")
    missing = member.get("/submissions/999999")
    assert missing.status_code in (403, 404) and "/login?next=" not in missing.get_data(as_text=True)  # logged in: no log-in offer


def test_what_cannot_be_taken_back_in_one_click_asks_first_and_says_what_it_costs(site):
    """Every form that publishes, disqualifies, cancels or re-evaluates carries the question
    the page's script asks before sending it (the browser test answers one of them)."""
    site.person("a@example.org", "alpha")
    sid = site.submission("a@example.org", SANITY)  # queued: it can be cancelled
    member, organizer = site.client("a@example.org"), site.client(ORGANIZER)
    asked = {}
    for who, client, path in (("team", member, "/submissions"), ("team", member, f"/submissions/{sid}"),
                              ("organizer", organizer, f"/submissions/{sid}"), ("organizer", organizer, "/admin"),
                              ("organizer", organizer, f"/admin/phases/{SANITY}")):
        for form in re.findall(r"<form [^>]*>", client.get(path).get_data(as_text=True)):
            action = re.search(r'action="([^"]+)"', form).group(1)
            question = re.search(r'data-confirm="([^"]+)"', form)
            asked[who, action] = html.unescape(question.group(1)) if question else None
    assert asked["team", f"/submissions/{sid}/cancel"] == f"Cancel submission {sid}? It still counts against your team's quota."
    assert asked["organizer", f"/submissions/{sid}/cancel"] == f"Cancel submission {sid}? It will no longer count against the team's quota."
    assert "again" in asked["organizer", f"/admin/submissions/{sid}/reevaluate"]
    assert asked["organizer", f"/admin/phases/{FINAL}/publish"].startswith(f"Publish the results of {FINAL}?")
    assert asked["organizer", f"/admin/phases/{SANITY}/submissions/disqualify"].startswith("Disqualify this submission?")
    unasked = [action for (who, action), question in asked.items()
               if question is None and re.search(r"/(publish|cancel|reevaluate|disqualify)", action)]
    assert unasked == []


def test_organizers_list_every_submission_by_phase_team_and_status(site):
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    scored = site.submission("a@example.org", SANITY, GOOD)
    failed = site.submission("b@example.org", SANITY)
    job = queue.claim_next(site.sessions, f"test:{failed}:x")  # the oldest queued: this one
    queue.finish(site.sessions, job, {"status": "failed", "failure": "invalid_outputs", "error": "no predictions.json"})
    queued = site.submission("b@example.org", VALIDATION)
    organizer = site.client(ORGANIZER)
    page = organizer.get("/admin/submissions")
    rows = table_rows(page, "all-submissions")
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        (str(queued), VALIDATION, "beta", "queued"), (str(failed), SANITY, "beta", "failed"), (str(scored), SANITY, "alpha", "succeeded")]
    assert "invalid_outputs: no predictions.json" in rows[1][6]
    body = page.get_data(as_text=True)
    assert f'action="/admin/submissions/{failed}/reevaluate"' in body and f'action="/admin/submissions/{scored}/reevaluate"' not in body
    assert [r[0] for r in table_rows(organizer.get(f"/admin/submissions?phase={SANITY}&team=bet"), "all-submissions")] == [str(failed)]
    assert [r[0] for r in table_rows(organizer.get("/admin/submissions?status=queued"), "all-submissions")] == [str(queued)]
    wrong = organizer.get("/admin/submissions?status=lost")
    assert wrong.status_code == 400 and "no status 'lost'; the statuses are received, validating, queued" in text(wrong)
    nav = re.search(r"<nav class=\"menu\">.*?</nav>", body, re.S).group(0)
    assert ">Submissions<" in nav and ">Team<" not in nav  # an organizer's menu leads to every team's submissions
    assert ">Team<" in site.client("a@example.org").get("/").get_data(as_text=True)


def test_a_password_change_needs_the_current_one_keeps_this_session_and_ends_the_others(site):
    site.person("a@example.org", "alpha")
    here, elsewhere = site.client("a@example.org"), site.client("a@example.org")
    new = "a brand new passphrase"
    wrong = here.form("/account/password", {"current": "not it at all", "password": new, "confirm": new}, page="/account")
    assert wrong.status_code == 400 and "the current password is wrong" in text(wrong)
    weak = here.form("/account/password", {"current": PASSWORD, "password": "short", "confirm": "short"}, page="/account")
    assert weak.status_code == 400 and "at least 10 characters" in text(weak)
    assert here.form("/account/password", {"current": PASSWORD, "password": new, "confirm": new}, page="/account").status_code == 302
    assert here.get("/account").status_code == 200  # still logged in here
    assert elsewhere.get("/account").status_code in (302, 401)  # the other session ended
    assert Client(site.app).form("/login", {"email": "a@example.org", "password": PASSWORD}).status_code == 401
    assert Client(site.app).form("/login", {"email": "a@example.org", "password": new}).status_code == 302


def test_a_disqualified_team_reads_it_on_the_upload_page_before_choosing_a_file(site):
    from iugc.submissions import disqualification

    site.person("a@example.org", "alpha")
    client = site.client("a@example.org")
    assert 'type="file"' in client.get(f"/phases/{SANITY}/upload").get_data(as_text=True)
    organizer_id = site.user_id(ORGANIZER)
    with db.transaction(site.sessions) as session:
        team_id = session.execute(select(Team.id).where(Team.name == "alpha")).scalar_one()
        disqualification.disqualify_team(session, team_id, "two accounts for one team", organizer_id)
    page = client.get(f"/phases/{SANITY}/upload")
    body = page.get_data(as_text=True)
    assert "your team alpha is disqualified (two accounts for one team) and may not submit" in text(page)
    assert 'type="file"' not in body


def test_a_submission_without_a_result_says_why(site):
    site.person("a@example.org", "alpha")
    failed = site.submission("a@example.org", SANITY)
    job = queue.claim_next(site.sessions, f"test:{failed}:x")
    queue.finish(site.sessions, job, {"status": "failed", "failure": "invalid_outputs", "error": "no predictions.json in /output"})
    queued = site.submission("a@example.org", SANITY)
    client = site.client("a@example.org")
    said = text(client.get(f"/submissions/{failed}"))
    assert "No result: the evaluation failed (invalid_outputs: no predictions.json in /output)." in said and "No result yet" not in said
    assert "No result yet: the evaluation is queued (queue position 1), waiting for a worker to start." in text(client.get(f"/submissions/{queued}"))
    client.form(f"/submissions/{queued}/cancel", page=f"/submissions/{queued}")
    assert "No result: the evaluation was cancelled." in text(client.get(f"/submissions/{queued}"))


def test_a_team_describes_its_method_and_chooses_what_counts_from_the_submission_page(site):
    site.person("a@example.org", "alpha")
    best = site.submission("a@example.org", SANITY, GOOD)
    other = site.submission("a@example.org", SANITY, FAIR)
    team = site.client("a@example.org")
    assert 'id="on-the-leaderboard"' in team.get(f"/submissions/{other}").get_data(as_text=True)
    assert 'id="on-the-leaderboard"' not in site.client(ORGANIZER).get(f"/submissions/{other}").get_data(as_text=True)
    page = f"/submissions/{other}"
    assert team.form(f"/submissions/{other}/describe", {"description": "nnU-Net <b>2d</b>", "url": "https://example.org/m"},
                     page=page).status_code == 302
    assert team.form(f"/submissions/{other}/choose", page=page).status_code == 302
    body = site.client().get(f"/leaderboard/{SANITY}").get_data(as_text=True)
    assert '<a href="https://example.org/m" rel="nofollow noopener" target="_blank">nnU-Net &lt;b&gt;2d&lt;/b&gt;</a>' in body
    (row,) = table_rows(site.client().get(f"/leaderboard/{SANITY}"), "leaderboard")
    assert row[2] == f"{psfhs_score(FAIR):.4f}" and "chosen" in row[1]  # the team's choice, not its best
    refused = team.form(f"/submissions/{other}/describe", {"description": "x", "url": "ftp://example.org"}, page=page)
    assert refused.status_code == 302 and "the link must be an http:// or https:// address" in text(team.get(page))
    assert team.form(f"/submissions/{other}/unchoose", page=page).status_code == 302
    (row,) = table_rows(site.client().get(f"/leaderboard/{SANITY}"), "leaderboard")
    assert row[2] == f"{psfhs_score(GOOD):.4f}" and "chosen" not in row[1]
    assert site.client(ORGANIZER).form(f"/submissions/{best}/choose", page="/admin").status_code == 403
