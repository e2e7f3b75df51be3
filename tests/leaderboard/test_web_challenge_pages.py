"""What a team reads about a challenge before it submits: the data page (what the data
are, their licence, cases per phase, the public sample), the terms (accepted once per
team before its first submission, recorded and shown to organizers) and the timeline."""
from __future__ import annotations

import datetime as dt
import html
import re

import pytest

from iugc.submissions import challenges, db
from iugc.submissions.models import AuditEntry, Team
from tests.web_support import ORGANIZER, SANITY, VALIDATION, site  # noqa: F401 (a fixture)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def test_a_team_accepts_the_terms_once_before_its_first_submission_and_organizers_see_it(site):
    site.person("a@example.org", "alpha", accept_terms=False)
    team = site.client("a@example.org")
    assert "your team has not accepted them yet" in text(team.get("/"))
    page = team.get(f"/phases/{SANITY}/upload")
    assert "First, the terms of svc" in text(page) and "One team per group of people" in text(page)
    assert 'type="file"' not in page.get_data(as_text=True)
    with pytest.raises(Exception) as refused:
        site.submission("a@example.org", SANITY)
    assert "your team alpha has not accepted the terms of svc yet" in str(refused.value) and "/challenges/svc/terms" in str(refused.value)

    accepted = team.form(f"/challenges/svc/terms?next=/phases/{SANITY}/upload", page=f"/phases/{SANITY}/upload")
    assert accepted.status_code == 302 and accepted.headers["Location"].endswith(f"/phases/{SANITY}/upload")
    assert 'type="file"' in team.get(f"/phases/{SANITY}/upload").get_data(as_text=True)
    assert "accepted these terms on" in text(team.get("/challenges/svc/terms")) and 'id="accept-terms"' not in \
        team.get("/challenges/svc/terms").get_data(as_text=True)
    assert team.form("/challenges/svc/terms", page="/challenges/svc/terms").status_code == 302  # again: nothing new
    member = site.user_id("a@example.org")
    with site.sessions() as session:
        row = session.query(Team).filter_by(name="alpha").one()
        assert row.terms_accepted_at is not None and row.terms_accepted_by_id == member
        assert session.query(AuditEntry).filter_by(action="team.accept_terms").count() == 1
    assert site.submission("a@example.org", SANITY)  # now it may submit
    evil = team.form("/challenges/svc/terms?next=https://evil.example/x", page="/challenges/svc/terms")
    assert evil.headers["Location"].endswith("/challenges/svc/terms")  # only the site's own upload pages

    console = text(site.client(ORGANIZER).get("/admin"))
    assert re.search(r"svc alpha \S+ \S+ UTC \S+ \S+ UTC by a@example\.org", console), console[console.find("Teams"):][:300]
    assert site.client().get("/challenges/svc/terms").status_code == 200  # anyone may read them
    assert site.client().post("/challenges/svc/terms").status_code in (302, 400)  # accepting needs a login (and CSRF)


def test_the_data_page_says_what_the_data_are_their_licence_and_what_a_team_sees(site):
    anonymous = site.client()
    page = text(anonymous.get("/challenges/svc/data"))
    assert "Transperineal intrapartum ultrasound frames" in page and "CC BY 4.0" in page
    assert "https://zenodo.org/records/10969427" in page and "Scientific Data 11, 436" in page
    assert "sanity-check — each case's values" in page and "validation — only the averages" in page
    assert "No public sample to download: svc-sanity-check has no dataset yet" in page
    missing = anonymous.get("/challenges/nope/data")
    assert missing.status_code == 404 and "no challenge 'nope'" in text(missing)


def test_the_timeline_shows_each_phase_open_upcoming_or_closed(site):
    now = dt.datetime.now(dt.timezone.utc)
    with db.transaction(site.sessions) as session:
        challenges.update_phase(session, VALIDATION, opens_at=now + dt.timedelta(days=3))
        challenges.update_phase(session, SANITY, opens_at=now - dt.timedelta(days=9), closes_at=now - dt.timedelta(days=1))
    body = text(site.client().get("/"))
    timeline = body[body.find("Timeline"):body.find("Phases", body.find("Timeline"))]
    assert re.search(r"closed sanity-check : from \S+ \S+ UTC ?, until \S+ \S+ UTC", timeline), timeline
    assert re.search(r"not open yet validation : from \S+ \S+ UTC ?, with no closing date", timeline), timeline
    assert "open now final-test : open from the start, with no closing date" in timeline, timeline


def test_an_organizer_makes_the_latest_scored_submission_count_and_every_page_says_so(site):
    from click.testing import CliRunner

    from iugc.cli import main
    from tests.web_support import FAIR, GOOD

    site.person("a@example.org", "alpha")
    best = site.submission("a@example.org", VALIDATION, GOOD)
    later = site.submission("a@example.org", VALIDATION, FAIR)
    organizer = site.client(ORGANIZER)
    board = organizer.get(f"/leaderboard/{VALIDATION}").get_data(as_text=True)
    assert f"#{best}" in board and f"#{later}" not in board and "its best-scoring submission in this phase" in text(organizer.get(f"/leaderboard/{VALIDATION}"))
    form = {"opens": "", "closes": "", "per_day": "5", "total": "", "failures_count": "y", "counts": "last"}
    assert organizer.form(f"/admin/phases/{VALIDATION}/settings", form, page=f"/admin/phases/{VALIDATION}").status_code == 302
    board = organizer.get(f"/leaderboard/{VALIDATION}")
    assert f"#{later}" in board.get_data(as_text=True) and f"#{best}" not in board.get_data(as_text=True)
    assert "Each team's row is its latest scored submission in this phase" in text(board)
    team = site.client("a@example.org")
    assert "your team's latest scored submission counts unless you choose one" in text(team.get(f"/submissions/{best}"))
    assert "a team's latest submission counts unless it chooses one" in text(team.get("/"))
    env = {"IUGC_DATABASE_URL": f"sqlite:///{site.tmp / 'web.sqlite3'}", "IUGC_INSTANCE": str(site.tmp)}
    back = CliRunner().invoke(main, ["admin", "phase", "--phase", VALIDATION, "--counts", "best"], env=env)
    assert back.exit_code == 0 and "a team's best counts" in back.output, back.output
    assert f"#{best}" in organizer.get(f"/leaderboard/{VALIDATION}").get_data(as_text=True)
