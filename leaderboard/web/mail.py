"""The site's e-mail: team invitations (the invitation itself is
``iugc.submissions.teams.invite``) and password-reset links (``iugc.submissions.accounts.reset_token``).

Mail goes out through the SMTP server the organizers configure (``IUGC_SMTP_URL``:
``smtp://[USER:PASSWORD@]HOST[:PORT]``, ``smtp+starttls://`` or ``smtps://``; sender
``IUGC_MAIL_FROM``). Without one, or when the server refuses, an invitation's link is shown
to the inviter to pass on; a reset link is made by an organizer on the admin page.
"""
from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from iugc.submissions.exceptions import ConfigurationError

SMTP_TIMEOUT_SECONDS = 10
SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def parse_smtp_url(url: str) -> dict:
    """The SMTP server of ``IUGC_SMTP_URL`` as connection settings.

    >>> parse_smtp_url("smtp+starttls://bot%40lab.org:s3cret@mail.lab.org")
    {'scheme': 'smtp+starttls', 'host': 'mail.lab.org', 'port': 587, 'user': 'bot@lab.org', 'password': 's3cret'}
    >>> parse_smtp_url("http://x")
    Traceback (most recent call last):
    ...
    iugc.submissions.exceptions.ConfigurationError: IUGC_SMTP_URL must be smtp://, smtp+starttls:// or smtps://[USER:PASSWORD@]HOST[:PORT], got a http:// URL
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigurationError(f"IUGC_SMTP_URL must be smtp://, smtp+starttls:// or smtps://[USER:PASSWORD@]HOST[:PORT], got a {parts.scheme}:// URL")
    return {"scheme": parts.scheme, "host": parts.hostname, "port": parts.port or SCHEMES[parts.scheme],
            "user": unquote(parts.username) if parts.username else None, "password": unquote(parts.password) if parts.password else None}


def invitation_message(sender: str, to: str, team: str, inviter: str, link: str, expires: dt.datetime) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, f"Join team {team} on the IUGC challenge platform"
    mail.set_content(
        f"{inviter} invites you to join the team {team}.\n\n"
        f"Open this link while logged in as {to} (register with that address first if you have no account):\n\n"
        f"{link}\n\nThe invitation can be used once, until {expires:%Y-%m-%d %H:%M} UTC.\n")
    return mail


def reset_message(sender: str, to: str, link: str, hours: int) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, "Reset your password on the IUGC challenge platform"
    mail.set_content(
        f"Someone (we hope you) asked to reset the password of {to}.\n\n"
        f"Choose a new one at this link within {hours} hours; it works once:\n\n{link}\n\n"
        "If you did not ask, ignore this message: your password stays as it is.\n")
    return mail


def send(smtp_url: str, mail: EmailMessage) -> None:
    """Deliver ``mail`` through the configured server; ``OSError``/``smtplib.SMTPException`` on failure."""
    server = parse_smtp_url(smtp_url)
    if server["scheme"] == "smtps":
        client = smtplib.SMTP_SSL(server["host"], server["port"], timeout=SMTP_TIMEOUT_SECONDS, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(server["host"], server["port"], timeout=SMTP_TIMEOUT_SECONDS)
    with client:
        if server["scheme"] == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if server["user"]:
            client.login(server["user"], server["password"] or "")
        client.send_message(mail)
