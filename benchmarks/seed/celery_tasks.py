"""A seed-style Celery app with library defaults: one task sends the welcome email.

celery -A celery_tasks worker --loglevel INFO
"""

import os
import smtplib

from celery import Celery
from welcome import SMTP_HOST, SMTP_PORT, welcome

app = Celery("seed", broker=os.environ["BROKER_URL"])
app.conf.task_default_queue = os.environ.get("SEED_QUEUE", "celery")
if app.conf.broker_url.startswith("sqs://"):
    app.conf.broker_transport_options = {"is_secure": False}  # a local endpoint, plain HTTP


@app.task
def send_welcome_email(email: str, name: str) -> None:
    with smtplib.SMTP(SMTP_HOST, SMTP_PORT) as smtp:
        smtp.send_message(welcome(email, name))
