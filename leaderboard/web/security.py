"""Accounts and the guards every web page goes through.

- The secret key (signs the session cookie and the CSRF tokens): ``SECRET_KEY`` in the
  test config, else ``$IUGC_SECRET_KEY``, else the file ``<instance>/secret_key``; a test
  app (``create_app(test_config)``) without one gets a random key; otherwise the app
  refuses to start and says how to set one.
- Passwords: ``iugc.submissions.accounts`` (argon2id, one scheme for the pages and the commands).
- Sessions: Flask-Login; the session names the user *and* a fingerprint of the password
  hash, so changing a password ends every other session; a deactivated user is logged out.
- Every page is declared with :func:`page` and its access level (``public``, ``user``,
  ``organizer``); the level is checked in the view wrapper on every request, never only
  in a template. ``ACCESS`` lists what each endpoint requires (a test walks it).
- CSRF (Flask-WTF) on every form POST except the bearer-token API; rate limits
  (Flask-Limiter) on login, registration and upload.
"""
from __future__ import annotations

import os
import secrets
from functools import wraps
from pathlib import Path

from flask import abort, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect

from iugc.submissions.accounts import fingerprint
from iugc.submissions.exceptions import ConfigurationError
from iugc.submissions.models import Role, User
from iugc.leaderboard.app import service

ACCESS: dict[str, str] = {}
"""endpoint -> the access level :func:`page` declared for it."""
LEVELS = ("public", "user", "organizer")
MIN_SECRET_LENGTH = 32

csrf = CSRFProtect()
limiter = Limiter(get_remote_address, default_limits=[])  # storage: RATELIMIT_STORAGE_URI (iugc.leaderboard.app)


@limiter.request_filter
def _not_limited() -> bool:
    """The requests Flask-Limiter skips at once (resolving no limit costs an API call more
    than its own work): every rate here is on a form's POST (``page(limit=...)``), and API
    v1 counts each token's calls itself (``iugc.leaderboard.api``)."""
    return request.method != "POST" or request.blueprint == "api"


login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Log in to see this page."
login_manager.session_protection = "strong"


def secret_key(configured: str | None, instance: Path, testing: bool, environ=None) -> str:
    """The app's secret key, or ConfigurationError saying how to set one.

    >>> secret_key("k" * 40, Path("/nonexistent"), testing=False, environ={}) == "k" * 40
    True
    >>> secret_key(None, Path("/nonexistent"), testing=False, environ={})
    Traceback (most recent call last):
    ...
    iugc.submissions.exceptions.ConfigurationError: no secret key: set IUGC_SECRET_KEY (for example `export IUGC_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')`) or write one into /nonexistent/secret_key (`make demo` does)
    """
    env = os.environ if environ is None else environ
    source, key = "SECRET_KEY", configured
    if not key and env.get("IUGC_SECRET_KEY"):
        source, key = "IUGC_SECRET_KEY", env["IUGC_SECRET_KEY"]
    path = instance / "secret_key"
    if not key and path.is_file():
        source, key = str(path), path.read_text().strip()
    if not key:
        if testing:
            return secrets.token_hex(32)
        raise ConfigurationError(
            "no secret key: set IUGC_SECRET_KEY (for example `export IUGC_SECRET_KEY=$(python3 -c 'import secrets; "
            f"print(secrets.token_hex(32))')`) or write one into {path} (`make demo` does)")
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigurationError(f"the secret key from {source} has {len(key)} characters; use at least {MIN_SECRET_LENGTH} random ones")
    return key


def write_secret_key(instance: Path) -> Path:
    """Create ``<instance>/secret_key`` (mode 600) if it is missing; returns its path."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.replace(tmp, path)
    return path


class Account(UserMixin):
    """The logged-in user (a detached ``User`` row) as Flask-Login wants it."""

    def __init__(self, user: User):
        self.user = user
        self.id = user.id
        self.email = user.email
        self.role = user.role

    @property
    def is_organizer(self) -> bool:
        return self.role == Role.organizer

    def get_id(self) -> str:
        return f"{self.user.id}:{fingerprint(self.user.password_hash)}"


@login_manager.user_loader
def _load(session_id: str):
    user_id, _, mark = session_id.partition(":")
    if not user_id.isdigit():
        return None
    with service().read_sessions() as session:
        user = session.get(User, int(user_id))
    if user is None or not user.active or not user.password_hash or fingerprint(user.password_hash) != mark:
        return None
    return Account(user)


def page(blueprint, rule: str, access: str, methods=("GET",), limit: str | None = None):
    """Register a view on ``blueprint`` with its access level, checked on every request.

    ``limit``: the name of an app config entry holding a Flask-Limiter rate (``"5 per
    minute"``), applied to POST requests of this page.
    """
    if access not in LEVELS:
        raise ValueError(f"access must be one of {LEVELS}, got {access!r}")

    def decorate(view):
        @wraps(view)
        def wrapper(**kwargs):
            if access != "public" and not current_user.is_authenticated:
                return login_manager.unauthorized()
            if access == "organizer" and not current_user.is_organizer:
                abort(403, "only organizers may open this page")
            return view(**kwargs)

        guarded = wrapper
        if limit is not None:
            guarded = limiter.limit(lambda: current_app.config[limit], methods=["POST"])(wrapper)
        ACCESS[f"{blueprint.name}.{view.__name__}"] = access
        blueprint.add_url_rule(rule, view.__name__, guarded, methods=list(methods))
        return guarded
    return decorate
