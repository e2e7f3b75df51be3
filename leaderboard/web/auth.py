"""Accounts: ``/register``, ``/login``, ``/logout``, ``/account`` (API tokens); the rules are
``iugc.submissions.accounts``'."""
from __future__ import annotations

import smtplib
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from iugc.submissions import accounts, db
from iugc.submissions.exceptions import Conflict, InvalidRequest, NotFound
from iugc.leaderboard.web import mail
from iugc.leaderboard.web.forms import ActionForm, InviteForm, LoginForm, PasswordForm, RegisterForm, ResetForm
from iugc.leaderboard.web.security import Account, page
from iugc.leaderboard.app import service

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host): an open redirect otherwise."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("challenge.overview")


@page(bp, "/register", "public", methods=("GET", "POST"), limit="RATE_LIMIT_REGISTER")
def register():
    form = RegisterForm()
    if form.validate_on_submit():
        email, password = form.email.data.strip(), form.password.data
        problem = accounts.check_new_password(password, email)
        if problem:
            form.password.errors.append(problem)
        else:
            try:
                with db.transaction(service().sessions) as session:
                    user = accounts.create_user(session, email, "participant", password)
            except (InvalidRequest, Conflict) as exc:
                form.email.errors.append(str(exc) if isinstance(exc, InvalidRequest) else "an account with this e-mail exists; log in instead")
            else:
                login_user(Account(user))
                target = request.args.get("next")
                if target:  # came from a page that asked to log in first (an invitation's link): go back there
                    flash("Welcome! Your account is ready.", "success")
                    return redirect(_safe_next(target))
                flash("Welcome! Create or join a team to submit.", "success")
                return redirect(url_for("teams.index"))
    return render_template("auth/register.html", form=form), 200 if request.method == "GET" or not form.errors else 400


@page(bp, "/login", "public", methods=("GET", "POST"), limit="RATE_LIMIT_LOGIN")
def login():
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        with db.transaction(service().sessions) as session:
            user = accounts.log_in(session, email, form.password.data)
        if user is not None:
            login_user(Account(user))
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("wrong e-mail address or password")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form), 200 if request.method == "GET" else 400


@page(bp, "/forgot", "public", methods=("GET", "POST"), limit="RATE_LIMIT_LOGIN")
def forgot():
    """Ask for a reset link by e-mail. The answer is the same whether the address has an
    account or not (it says nothing about who is registered)."""
    form = InviteForm()
    smtp_url = current_app.config["SMTP_URL"]
    if smtp_url and form.validate_on_submit():
        email = form.email.data.strip().lower()
        try:
            with db.transaction(service().sessions) as session:
                token = accounts.reset_token(session, current_app.secret_key, email)
        except NotFound:
            token = None
        if token:
            link = url_for("auth.reset", token=token, _external=True)
            try:
                mail.send(smtp_url, mail.reset_message(current_app.config["MAIL_FROM"], email, link, accounts.RESET_HOURS))
            except (OSError, smtplib.SMTPException):
                current_app.logger.exception("the reset link for %s could not be mailed", email)
        flash(f"If {email} has an account here, a link to choose a new password is on its way (valid {accounts.RESET_HOURS} hours).", "info")
        return redirect(url_for("auth.login"))
    return render_template("auth/forgot.html", form=form, mail=bool(smtp_url)), 200 if request.method == "GET" or not smtp_url else 400


@page(bp, "/reset/<token>", "public", methods=("GET", "POST"), limit="RATE_LIMIT_LOGIN")
def reset(token):
    with service().sessions() as session:
        user = accounts.user_of_reset_token(session, current_app.secret_key, token)  # a bad link: its one sentence, 400
        email = user.email
    form = ResetForm()
    if form.validate_on_submit():
        try:
            with db.transaction(service().sessions) as session:
                accounts.reset_password(session, current_app.secret_key, token, form.password.data)
        except InvalidRequest as exc:
            form.password.errors.append(str(exc))
        else:
            logout_user()
            flash("Your new password is set: log in with it.", "success")
            return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form, email=email), 200 if request.method == "GET" else 400


@page(bp, "/logout", "user", methods=("POST",))
def logout():
    form = ActionForm()
    if form.validate_on_submit():
        logout_user()
        flash("You are logged out.", "info")
    return redirect(url_for("challenge.overview"))


@page(bp, "/account", "user")
def account():
    with service().sessions() as session:
        tokens = accounts.tokens_of(session, current_user.id)
    return render_template("auth/account.html", tokens=tokens, form=ActionForm(), password_form=PasswordForm(formdata=None), new_token=None)


@page(bp, "/account/password", "user", methods=("POST",), limit="RATE_LIMIT_LOGIN")
def change_password():
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            with db.transaction(service().sessions) as session:
                user = accounts.change_password(session, current_user.id, form.current.data, form.password.data)
        except InvalidRequest as exc:
            (form.current if exc.field == "current" else form.password).errors.append(str(exc))
        else:
            login_user(Account(user))  # this session goes on under the new password; the others end
            flash("Your password is changed; other sessions are logged out.", "success")
            return redirect(url_for("auth.account"))
    with service().sessions() as session:
        tokens = accounts.tokens_of(session, current_user.id)
    return render_template("auth/account.html", tokens=tokens, form=ActionForm(), password_form=form, new_token=None), 400


@page(bp, "/account/tokens/<int:token_id>/revoke", "user", methods=("POST",))
def revoke_token(token_id):
    ActionForm().validate_on_submit()  # CSRF is checked before the view; the form has no other field
    with db.transaction(service().sessions) as session:
        token = accounts.revoke_token(session, current_user.id, token_id, actor_id=current_user.id)
        prefix = token.prefix
    flash(f"Token {prefix}… is revoked: it no longer works.", "success")
    return redirect(url_for("auth.account"))


@page(bp, "/account/token", "user", methods=("POST",))
def new_token():
    form = ActionForm()
    if not form.validate_on_submit():
        return redirect(url_for("auth.account"))
    with db.transaction(service().sessions) as session:
        token = accounts.issue_token(session, current_user.email, actor_id=current_user.id)
    with service().sessions() as session:
        tokens = accounts.tokens_of(session, current_user.id)
    phase = request.form.get("phase", "")
    phase = phase if phase.replace("-", "").isalnum() else ""
    response = current_app.make_response(render_template("auth/account.html", tokens=tokens, form=ActionForm(),
                                                         password_form=PasswordForm(formdata=None), new_token=token,
                                                         phase=phase or "PHASE"))
    response.headers["Cache-Control"] = "no-store"
    return response
