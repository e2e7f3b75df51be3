"""The site's e-mail, delivered by a real SMTP server process on loopback (``aiosmtpd``
from PyPI, started here on a free port, writing a Maildir). Invitations to a team: the
invited address gets the link, only a user registered with that address can use it, once,
before it expires; without a mail server the inviter is shown the link. Password resets:
the link goes to the address, works once; without a mail server an organizer makes it."""
from __future__ import annotations

import datetime as dt
import html
import mailbox
import re
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from iugc.submissions import db
from iugc.submissions.models import AuditEntry, Invitation, Membership, Team
from tests.service_support import free_port, wait_for_port
from tests.web_support import ORGANIZER, PASSWORD, Client, Site

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


@pytest.fixture
def smtp(tmp_path):
    """``python -m aiosmtpd`` on 127.0.0.1:<free port>, delivering into a Maildir."""
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is not installed (pip install -e '.[dev]')")
    maildir = tmp_path / "maildir"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                               "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process=server)
        yield f"smtp://127.0.0.1:{port}", maildir
    finally:
        server.terminate()
        server.wait(timeout=30)


def messages(maildir, wait: float = 10.0) -> list:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (maildir / "new").is_dir() and any((maildir / "new").iterdir()):
            return list(mailbox.Maildir(maildir, create=False))
        time.sleep(0.05)
    return []


@pytest.fixture
def mailing_site(tmp_path, smtp):
    site = Site(tmp_path, SMTP_URL=smtp[0], MAIL_FROM="Challenge <challenge@example.org>")
    yield site, smtp[1]
    site.close()


@pytest.fixture
def plain_site(tmp_path):
    site = Site(tmp_path, SMTP_URL=None)
    yield site
    site.close()


def _invite(site, email="b@example.org"):
    alpha = site.client("a@example.org")
    with site.sessions() as session:
        team_id = session.execute(select(Team.id).where(Team.name == "alpha")).scalar_one()
    response = alpha.form(f"/teams/{team_id}/invite", {"email": email}, page="/teams")
    return alpha, team_id, response


def _members(site, team_id) -> int:
    with site.sessions() as session:
        return len(session.execute(select(Membership.id).where(Membership.team_id == team_id)).all())


def test_the_invited_address_gets_a_link_that_lets_its_user_join_once(mailing_site):
    site, maildir = mailing_site
    site.person("a@example.org", "alpha")
    site.person("b@example.org")
    site.person("c@example.org")
    alpha, team_id, response = _invite(site, "B@Example.org")
    assert response.status_code == 302
    assert "Invitation sent to b@example.org" in text(alpha.get("/teams"))
    [mail] = messages(maildir)
    assert mail["To"] == "b@example.org" and mail["From"] == "Challenge <challenge@example.org>" and "alpha" in mail["Subject"]
    link = re.search(r"http://localhost(/teams/invitations/\S+)", mail.get_payload(decode=True).decode()).group(1)
    with site.sessions() as session:
        stored = session.execute(select(Invitation)).scalar_one()
        assert link.rsplit("/", 1)[1] not in (stored.token_sha256, stored.email)  # only the token's hash is kept
    # another user cannot use it
    other = site.client("c@example.org")
    refused = other.get(link)
    assert refused.status_code == 403 and "sent to another e-mail address" in text(refused)
    assert other.form(link, page="/teams").status_code == 403 and _members(site, team_id) == 1
    # the invited user joins
    bob = site.client("b@example.org")
    page = bob.get(link)
    assert page.status_code == 200 and "Join alpha" in text(page)
    assert bob.form(link, page=link).status_code == 302
    assert _members(site, team_id) == 2 and "b@example.org" in text(alpha.get("/teams"))
    # used: refused
    again = bob.get(link)
    assert again.status_code == 400 and "this invitation was already used on" in text(again)
    with site.sessions() as session:
        actions = session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars().all()
    assert actions[-2:] == ["team.invite", "team.join"]


def test_an_expired_invitation_is_refused_with_a_clear_message(mailing_site):
    site, maildir = mailing_site
    site.person("a@example.org", "alpha")
    site.person("b@example.org")
    _, team_id, response = _invite(site)
    assert response.status_code == 302
    link = re.search(r"http://localhost(/teams/invitations/\S+)", messages(maildir)[0].get_payload(decode=True).decode()).group(1)
    with db.transaction(site.sessions) as session:
        session.execute(select(Invitation)).scalar_one().expires_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    bob = site.client("b@example.org")
    refused = bob.get(link)
    assert refused.status_code == 400 and "this invitation expired on" in text(refused) and "ask the team for a new one" in text(refused)
    assert bob.form(link, page="/teams").status_code == 400 and _members(site, team_id) == 1
    assert bob.get("/teams/invitations/not-a-token").status_code == 404


def test_without_a_mail_server_the_inviter_is_shown_the_link_and_told_so(plain_site):
    site = plain_site
    site.person("a@example.org", "alpha")
    site.person("b@example.org")
    alpha, team_id, response = _invite(site)
    assert response.status_code == 302
    page = text(alpha.get("/teams"))
    assert "No mail server is configured on this site (IUGC_SMTP_URL), so nothing was sent" in page
    link = re.search(r"pass this link on to b@example.org yourself \(it is shown once\): http://localhost(/teams/invitations/\S+)", page).group(1)
    assert "b@example.org invited, until" in text(alpha.get("/teams"))
    bob = site.client("b@example.org")
    assert bob.form(link, page=link).status_code == 302 and _members(site, team_id) == 2


def test_a_refused_mail_server_still_leaves_the_link_with_the_inviter(tmp_path):
    site = Site(tmp_path, SMTP_URL=f"smtp://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        site.person("a@example.org", "alpha")
        alpha, _, response = _invite(site)
        assert response.status_code == 302
        page = text(alpha.get("/teams"))
        assert "The mail server did not take the invitation (ConnectionRefusedError), so nothing was sent" in page
        assert re.search(r"pass this link on to b@example.org yourself \(it is shown once\): http://localhost/teams/invitations/\S+", page)
    finally:
        site.close()


@pytest.mark.parametrize("email, message", [("not-an-address", "'not-an-address' is not an e-mail address"),
                                            ("a@example.org", "that is your own address")])
def test_a_bad_address_is_refused_on_the_form_and_invites_nobody(plain_site, email, message):
    site = plain_site
    site.person("a@example.org", "alpha")
    _, _, response = _invite(site, email)
    assert response.status_code == 400 and message in text(response)
    with site.sessions() as session:
        assert session.execute(select(Invitation)).first() is None


def test_only_members_invite_to_a_team_and_a_bad_smtp_url_stops_the_start(plain_site, tmp_path):
    from iugc.leaderboard.app import create_app
    from iugc.submissions.exceptions import ConfigurationError

    site = plain_site
    site.person("a@example.org", "alpha")
    site.person("b@example.org", "beta")
    with site.sessions() as session:
        alpha = session.execute(select(Team.id).where(Team.name == "alpha")).scalar_one()
    response = site.client("b@example.org").form(f"/teams/{alpha}/invite", {"email": "c@example.org"}, page="/teams")
    assert response.status_code == 400 and "you are not a member of this team" in text(response)
    with pytest.raises(ConfigurationError, match="IUGC_SMTP_URL must be smtp://"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}", "INSTANCE": str(tmp_path), "SMTP_URL": "mailto:x@y"})


def _can_log_in(site, email, password) -> bool:
    return Client(site.app).form("/login", {"email": email, "password": password}).status_code == 302


def _set_password(client, path, new):
    return client.http.post(path, data={"password": new, "confirm": new, "csrf_token": client.token(path)})


def test_a_forgotten_password_is_reset_by_a_mailed_link_that_works_once(mailing_site):
    site, maildir = mailing_site
    site.person("a@example.org", "alpha")
    visitor = Client(site.app)
    assert "Forgot your password?" in text(visitor.get("/login"))
    asked = visitor.form("/forgot", {"email": "A@example.org"}, page="/forgot")
    assert asked.status_code == 302
    [mail] = messages(maildir)
    assert mail["To"] == "a@example.org" and "Reset your password" in mail["Subject"]
    link = re.search(r"http://localhost(/reset/\S+)", mail.get_payload(decode=True).decode()).group(1)
    page = visitor.get(link)
    assert page.status_code == 200 and "For a@example.org" in text(page)
    weak = _set_password(visitor, link, "short")
    assert weak.status_code == 400 and "at least 10 characters" in text(weak)
    assert _set_password(visitor, link, "my fresh pass phrase").status_code == 302
    assert _can_log_in(site, "a@example.org", "my fresh pass phrase") and not _can_log_in(site, "a@example.org", PASSWORD)
    used = visitor.get(link)
    assert used.status_code == 400 and "this reset link was used already" in text(used)
    tampered = visitor.get(link[:-4] + "abcd")
    assert tampered.status_code == 400 and "this reset link is not valid" in text(tampered)


def test_asking_for_an_unknown_address_answers_the_same_and_mails_nobody(mailing_site):
    site, maildir = mailing_site
    visitor = Client(site.app)
    asked = visitor.form("/forgot", {"email": "nobody@example.org"}, page="/forgot")
    assert asked.status_code == 302
    assert "If nobody@example.org has an account here, a link" in text(visitor.get("/login"))
    assert messages(maildir, wait=1.0) == []


def test_without_a_mail_server_an_organizer_makes_the_reset_link(plain_site):
    site = plain_site
    site.person("a@example.org", "alpha")
    assert "Ask an organizer of the challenge for a reset link" in text(Client(site.app).get("/forgot"))
    organizer = site.client(ORGANIZER)
    made = organizer.form("/admin/reset-link", {"email": "a@example.org"}, page="/admin")
    assert made.status_code == 302
    link = re.search(r"http://localhost(/reset/\S+)", text(organizer.get("/admin"))).group(1)
    visitor = Client(site.app)
    assert _set_password(visitor, link, "chosen after asking").status_code == 302
    assert _can_log_in(site, "a@example.org", "chosen after asking")
    unknown = organizer.form("/admin/reset-link", {"email": "nobody@example.org"}, page="/admin")
    assert unknown.status_code == 404 and "no user 'nobody@example.org'" in text(unknown)
    site.person("b@example.org")
    participant = site.client("b@example.org")
    assert participant.form("/admin/reset-link", {"email": "a@example.org"}, page="/teams").status_code == 403  # organizers only
    with site.sessions() as session:
        actions = session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars().all()
    assert actions[-3:-1] == ["user.reset_link", "user.password_reset"]  # then b's account
