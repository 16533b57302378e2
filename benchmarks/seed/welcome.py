"""The welcome email, as a seed app writes it: text and HTML, no templates."""

import os
from email.message import EmailMessage

SMTP_HOST = os.environ.get("SMTP_HOST", "localhost")
SMTP_PORT = int(os.environ.get("SMTP_PORT", "1025"))


def welcome(email: str, name: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"Welcome, {name}"
    message["From"] = "noreply@example.com"
    message["To"] = email
    message.set_content(f"Hello {name},\n\nThanks for signing up.\n")
    message.add_alternative(f"<p>Hello {name},</p><p>Thanks for signing up.</p>", subtype="html")
    return message
