"""Outgoing email over SMTP (SMTP_URL): invitation links, sent on the request, and alert
rules' email channels, sent by the worker (models/alerts.py)."""
import logging
import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask import current_app

log = logging.getLogger("causeloop.mail")
TIMEOUT_S = 10


def attempt(to, subject, body, timeout_s=TIMEOUT_S):
    """Send a plain-text email to one address or a list of them; None when the server took it,
    else why not (no SMTP_URL set, or the error)."""
    url = current_app.config["SMTP_URL"]
    if not url:
        return "SMTP_URL is not set"
    parts = urlsplit(url)
    message = EmailMessage()
    message["From"], message["Subject"] = current_app.config["SMTP_FROM"], subject
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message.set_content(body)
    client_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    default_port = 465 if parts.scheme == "smtps" else 587
    try:
        with client_class(parts.hostname, parts.port or default_port, timeout=timeout_s) as client:
            if parts.scheme == "smtp+starttls":
                client.starttls()
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
        return None
    except (OSError, smtplib.SMTPException) as error:
        return f"{type(error).__name__}: {str(error)[:300]}"


def send(to, subject, body):
    """Send a plain-text email; True when the server took it, False (logged) when it did not or
    no SMTP_URL is set."""
    if not current_app.config["SMTP_URL"]:
        return False
    error = attempt(to, subject, body)
    if error:
        log.warning("email to %s not sent: %s", to.split("@")[-1], error)
    return error is None


def send_invitation(invitation, workspace_name, accept_url):
    return send(invitation.email, f"You are invited to {workspace_name} on Causeloop",
                f"You have been invited to join {workspace_name} on Causeloop as {invitation.role}.\n\n"
                f"Accept the invitation (the link works once, for 7 days):\n{accept_url}\n")
