"""The web forms (Flask-WTF: every one carries and checks a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, InputRequired, Length, NumberRange, Optional, Regexp


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class RegisterForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("Password again", validators=[DataRequired(), EqualTo("password", "the two passwords differ")])


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("New password again", validators=[DataRequired(), EqualTo("password", "the two passwords differ")])


class TeamForm(FlaskForm):
    name = StringField("Team name", validators=[DataRequired(), Length(max=100)])
    challenge = HiddenField(validators=[DataRequired()])


class InviteForm(FlaskForm):
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=320)])


class ResetForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("New password again", validators=[DataRequired(), EqualTo("password", "the two passwords differ")])


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class DescribeForm(FlaskForm):
    """What the team says of a submission on the leaderboard (its rules: ``iugc.submissions.counting.describe``)."""

    description = StringField("Method, in one line", validators=[Length(max=1000)])
    url = StringField("Link (optional)", validators=[Length(max=1000)])


class ReasonForm(FlaskForm):
    """A reason the team will see (its rules: ``iugc.submissions.disqualification.clean_reason``)."""

    reason = TextAreaField("Reason", validators=[DataRequired(), Length(max=2000)])


class PhaseForm(FlaskForm):
    """A phase's window (UTC) and quotas; the rules are ``iugc.submissions.challenges.update_phase``'s."""

    opens = StringField("Opens (UTC)", validators=[Optional(), Length(max=40)], render_kw={"type": "datetime-local"})
    closes = StringField("Closes (UTC)", validators=[Optional(), Length(max=40)], render_kw={"type": "datetime-local"})
    per_day = IntegerField("Submissions per 24 hours", validators=[InputRequired()])
    total = IntegerField("Submissions in total (empty: no limit)", validators=[Optional()])
    failures_count = BooleanField("Failures the submission caused use up quota")
    counts = SelectField("Counts for a team that chose none", choices=[("best", "its best-scoring submission"),
                                                                         ("last", "its latest scored submission")],
                         validate_choice=False)  # checked by counting.set_default; absent: unchanged
    queue_without_worker = BooleanField("Queue uploads no running worker can evaluate (workers started on demand); "
                                        "otherwise they are refused with the reason")


class DatasetForm(FlaskForm):
    """A folder from `iugc data import` on the server and the sha256 of its manifest.json."""

    path = StringField("Folder on the server", validators=[DataRequired(), Length(max=4096)])
    sha256 = StringField("sha256 of manifest.json", validators=[DataRequired(), Regexp(r"^\s*[0-9a-fA-F]{64}\s*$", message="64 hexadecimal digits (`sha256sum FOLDER/manifest.json`)")])


class SubmissionReasonForm(ReasonForm):
    submission = IntegerField("Submission #", validators=[InputRequired(), NumberRange(min=1, max=2**31 - 1, message="a submission number, such as 12")])
