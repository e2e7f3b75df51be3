"""Helpers of the web tests: a migrated service with the app on Flask's test client (CSRF
on, as in production), people with passwords, scored submissions, and a client that
sends the CSRF token its session was given."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from iugc.leaderboard.app import create_app
from iugc.submissions.accounts import hash_password
from iugc.submissions import accounts, db, queue, teams
from iugc.submissions.uploads import submit
from tests.service_support import Service, accept, challenge_file, docker_like_archive

PASSWORD = "a long pass phrase"
ORGANIZER = "org@example.org"
SANITY, VALIDATION, FINAL = "svc-sanity-check", "svc-validation", "svc-final-test"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')

GOOD = {"dice": 0.9, "dice_ps": 0.85, "dice_fh": 0.93, "dice_all": 0.92, "hd": 10.0, "asd": 3.0, "aop_error": 6.0, "n_cases": 5}
FAIR = {**GOOD, "dice": 0.8, "dice_all": 0.81, "hd": 20.0, "asd": 6.0, "aop_error": 12.0}


def psfhs_score(a: dict) -> float:
    """The PSFHS 2023 formula, written out (the oracle for the score column)."""
    return 0.25 * a["dice"] + 0.125 * (1 - a["hd"] / 100) + 0.125 * (1 - a["asd"] / 100) + 0.5 * (1 - a["aop_error"] / 180)


class Site:
    def __init__(self, tmp_path: Path, url: str | None = None, **config):
        url = url or f"sqlite:///{tmp_path / 'web.sqlite3'}"
        self.service = Service(url, tmp_path, challenge_file(tmp_path, limits={"submissions_per_day": 5, "image_size_limit_mb": 1}))
        self.sessions, self.storage, self.tmp = self.service.sessions, self.service.storage, tmp_path
        with db.transaction(self.sessions) as session:
            accounts.user_by_email(session, ORGANIZER).password_hash = hash_password(PASSWORD)
        self.app = create_app({"DATABASE_URL": url, "STORAGE_URL": str(self.storage.root), "INSTANCE": str(tmp_path), **config})
        self._salt = 0

    def close(self):
        self.app.extensions["iugc"].engine.dispose()
        self.service.engine.dispose()

    def person(self, email: str, team: str | None = None, accept_terms: bool = True) -> int:
        """A participant with the test password, in a new ``team`` that has accepted the terms (unless told)."""
        with db.transaction(self.sessions) as session:
            user = accounts.create_user(session, email, "participant")
            user.password_hash = hash_password(PASSWORD)
            if team:
                created = teams.create_team(session, user, team)
                if accept_terms:
                    accept(session, user, created)
            return user.id

    def user_id(self, email: str) -> int:
        with self.sessions() as session:
            return accounts.user_by_email(session, email).id

    def archive(self) -> Path:
        self._salt += 1
        return docker_like_archive(self.tmp / f"a{self._salt}.tar", f"s{self._salt}")

    def submission(self, email: str, slug: str, aggregates: dict | None = None, cases: dict | None = None) -> int:
        """An uploaded submission, scored with ``aggregates`` when given (else left queued)."""
        with open(self.archive(), "rb") as stream:
            sid = submit(self.sessions, self.storage, self.user_id(email), slug, stream)
        if aggregates is not None:
            job = queue.claim_next(self.sessions, f"test:{sid}:x")
            assert queue.finish(self.sessions, job, {"status": "succeeded", "aggregates": aggregates, "score": psfhs_score(aggregates),
                                                     "cases": cases or {}})
        return sid

    def client(self, email: str | None = None) -> "Client":
        client = Client(self.app)
        if email:
            response = client.form("/login", {"email": email, "password": PASSWORD})
            assert response.status_code == 302, response.data[:500]
        return client


def open_site(tmp_path: Path, url: str | None = None):
    """A fresh site for a fixture to yield (closed afterwards)."""
    site = Site(tmp_path, url)
    yield site
    site.close()


@pytest.fixture
def site(tmp_path):
    """A fresh site on SQLite (import it into a test module to use it)."""
    yield from open_site(tmp_path)


class Client:
    """Flask's test client that reads the CSRF token from a page of its own session."""

    def __init__(self, app):
        self.http = app.test_client()

    def get(self, path, **kw):
        return self.http.get(path, **kw)

    def post(self, path, **kw):
        return self.http.post(path, **kw)

    def token(self, page: str = "/login") -> str:
        html = self.http.get(page).get_data(as_text=True)
        match = _TOKEN.search(html)
        assert match, f"no csrf_token on {page}"
        return match.group(1) or match.group(2)

    def form(self, path: str, data: dict | None = None, *, page: str | None = None, **kw):
        """POST ``data`` with this session's CSRF token (read from ``page``, default ``path``
        or the login page for POST-only routes)."""
        return self.http.post(path, data={**(data or {}), "csrf_token": self.token(page or ("/login" if path != "/register" else "/register"))}, **kw)


def install_client(url: str, dest: Path) -> Path:
    """``pip install URL`` (the client wheel the site serves) into a fresh virtual environment
    at ``dest``; returns its ``iugc``. The dependencies come from this environment instead of
    PyPI (the tests have no network): a .pth line, so this checkout's editable finder stays out."""
    import subprocess
    import sys
    import venv

    venv.create(dest, with_pip=True)
    site_packages = next((dest / "lib").glob("python3*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir() and (p / "click").is_dir())
    (site_packages / "deps.pth").write_text(f"{ours}\n")
    done = subprocess.run([str(dest / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", url],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return dest / "bin" / "iugc"
