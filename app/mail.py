"""Outgoing email over SMTP (SMTP_URL): for now only invitation links, sent on the request."""
import logging
import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask import current_app

log = logging.getLogger("causeloop.mail")
TIMEOUT_S = 10


def send(to, subject, body):
    """Send a plain-text email; True when the server took it, False (logged) when it did not or
    no SMTP_URL is set."""
    url = current_app.config["SMTP_URL"]
    if not url:
        return False
    parts = urlsplit(url)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = current_app.config["SMTP_FROM"], to, subject
    message.set_content(body)
    client_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    default_port = 465 if parts.scheme == "smtps" else 587
    try:
        with client_class(parts.hostname, parts.port or default_port, timeout=TIMEOUT_S) as client:
            if parts.scheme == "smtp+starttls":
                client.starttls()
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
        return True
    except (OSError, smtplib.SMTPException) as error:
        log.warning("email to %s not sent: %s: %s", to.split("@")[-1], type(error).__name__, error)
        return False


def send_invitation(invitation, workspace_name, accept_url):
    return send(invitation.email, f"You are invited to {workspace_name} on Causeloop",
                f"You have been invited to join {workspace_name} on Causeloop as {invitation.role}.\n\n"
                f"Accept the invitation (the link works once, for 7 days):\n{accept_url}\n")
