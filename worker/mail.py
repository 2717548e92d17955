"""Composing and delivering mail: plain text + simple HTML from templates/email, sent over
SMTP (SMTP_URL), or with no SMTP configured written to ./.data/outbox/ and the log, so a
developer can open the links. No tracking pixels, no remote images.

A user's name never enters a mail's text (a greeting would turn whatever was typed as a
name into a sentence from us); it appears only as the encoded display name of `To:`, and
only once the address is confirmed (app.claim_email)."""
from __future__ import annotations

import logging
import os
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import idna
from jinja2 import Environment, FileSystemLoader, select_autoescape

log = logging.getLogger("worker.mail")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "email"
SUBJECTS = {
    "verify": "Confirm your email for Story Genius",
    "reset": "Reset your Story Genius password",
    "receipt": "Your Story Genius receipt",
    "payment_failed": "Your Story Genius payment failed",
    "two_factor_enabled": "Two-factor sign-in is on for your Story Genius account",
    "two_factor_disabled": "Two-factor sign-in is off for your Story Genius account",
    "password_changed": "Your Story Genius password was changed",
    "low_balance": "Your Story Genius credits are running low",
    "credits_expiring": "Some of your Story Genius credits expire soon",
    "auto_top_up_failed": "Your Story Genius automatic top-up failed and is now off",
    "webhook_disabled": "A Story Genius webhook endpoint was turned off",
}
LINK_PATHS = {"verify": "/verify", "reset": "/reset"}

_templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                         keep_trailing_newline=True)


@dataclass(frozen=True)
class MailSettings:
    smtp_url: str | None
    mail_from: str
    app_url: str
    outbox: Path

    @classmethod
    def from_env(cls) -> "MailSettings":
        return cls(smtp_url=os.environ.get("SMTP_URL") or None,
                   mail_from=os.environ.get("MAIL_FROM") or "Story Genius <no-reply@storygenius.local>",
                   app_url=(os.environ.get("APP_URL") or os.environ.get("FRONTEND_URL")
                            or "http://127.0.0.1:8000").rstrip("/"),
                   outbox=Path(os.environ.get("MAIL_OUTBOX") or ".data/outbox").resolve())


def recipient(address: str, name: str | None) -> Address:
    """`To:` as a structured header, so the display name is quoted and encoded by the email
    package (never pasted into the header text). An internationalised domain goes in its
    ASCII (IDNA) form, which every mail server accepts."""
    local, _, domain = address.rpartition("@")
    try:
        domain = idna.encode(domain).decode("ascii")
    except idna.IDNAError:
        pass  # left in Unicode: delivered where the server speaks SMTPUTF8
    return Address(display_name=name or "", username=local, domain=domain)


def compose(settings: MailSettings, kind: str, address: str, name: str | None, data: dict,
            token: str | None) -> EmailMessage:
    """The message for one outbox row. Raises (KeyError, ValueError, template errors) when
    the row cannot make a mail: the caller fails it for good rather than retrying."""
    context = {"address": address, "data": data or {}, "app_url": settings.app_url,
               "link": f"{settings.app_url}{LINK_PATHS[kind]}?token={token}" if token else None}
    message = EmailMessage()
    message["Subject"] = SUBJECTS[kind] + (f": {data['plan']} plan" if kind == "receipt" and data.get("plan") else "")
    message["From"] = settings.mail_from
    message["To"] = recipient(address, name)
    message["Message-ID"] = make_msgid(domain="storygenius.local")
    message.set_content(_templates.get_template(f"{kind}.txt").render(context))
    message.add_alternative(_templates.get_template(f"{kind}.html").render(context), subtype="html")
    return message


def deliver(settings: MailSettings, message: EmailMessage) -> None:
    """Send over SMTP, or (no SMTP_URL) write an .eml file to the outbox folder."""
    if not settings.smtp_url:
        settings.outbox.mkdir(parents=True, exist_ok=True)
        path = settings.outbox / f"{time.strftime('%Y%m%d-%H%M%S')}-{message['Message-ID'].strip('<>')}.eml"
        path.write_bytes(bytes(message))
        log.info("no SMTP_URL: wrote %r to %s", message["Subject"], path)
        return
    url = urlsplit(settings.smtp_url)
    options = parse_qs(url.query)
    secure = url.scheme == "smtps"
    client_class = smtplib.SMTP_SSL if secure else smtplib.SMTP
    with client_class(url.hostname, url.port or (465 if secure else 25), timeout=30) as smtp:
        if options.get("starttls") == ["1"]:
            smtp.starttls(context=ssl.create_default_context())
        if url.username:
            smtp.login(unquote(url.username), unquote(url.password or ""))
        smtp.send_message(message)
