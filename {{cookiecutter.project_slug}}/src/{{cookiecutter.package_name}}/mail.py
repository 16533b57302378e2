"""Render the welcome email and hand it to the SMTP server."""

import smtplib
from email.message import EmailMessage
from email.utils import parseaddr

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from .settings import get_settings

_templates = Environment(
    loader=PackageLoader(__package__ or __name__.rpartition(".")[0]),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


class TransientMailError(Exception):
    """The server could not take the message now; sending again later may work."""


class PermanentMailError(Exception):
    """The server refused the message for good; sending again will not help."""


def render_welcome(name: str, email: str, message_id: str) -> EmailMessage:
    settings = get_settings()
    context = {"name": name, "email": email, "app_name": settings.app_name}
    message = EmailMessage()
    message["Subject"] = _templates.get_template("welcome_subject.txt").render(context).strip()
    message["From"] = settings.mail_from
    message["To"] = email
    message["Message-ID"] = message_id
    message.set_content(_templates.get_template("welcome.txt").render(context))
    message.add_alternative(_templates.get_template("welcome.html").render(context), subtype="html")
    return message


def send(message: EmailMessage) -> None:
    """Deliver `message`; the server has accepted it once this returns."""
    settings = get_settings()
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        detail = f"SMTP {exc.smtp_code}: {text}"
        if 400 <= exc.smtp_code < 500:
            raise TransientMailError(detail) from exc
        raise PermanentMailError(detail) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        transient = all(400 <= code < 500 for code in codes)
        error = TransientMailError if transient else PermanentMailError
        raise error(f"recipients refused: {exc.recipients}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientMailError(f"SMTP server unreachable: {exc!r}") from exc


def send_welcome(name: str, email: str, message_key: str) -> str:
    """Send the welcome email; `message_key` gives it the same Message-ID on every attempt."""
    _, sender = parseaddr(get_settings().mail_from)
    message_id = f"<{message_key}@{sender.rpartition('@')[2] or 'localhost'}>"
    send(render_welcome(name, email, message_id))
    return message_id
