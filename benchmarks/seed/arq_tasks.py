"""A seed-style ARQ worker with library defaults: one function sends the welcome email with
aiosmtplib, as ARQ's own examples do.

    arq arq_tasks.WorkerSettings
"""

import os
from typing import Any

import aiosmtplib
from arq.connections import RedisSettings
from welcome import SMTP_HOST, SMTP_PORT, welcome

REDIS = RedisSettings.from_dsn(os.environ["BROKER_URL"])


async def send_welcome_email(ctx: dict[str, Any], email: str, name: str) -> None:
    await aiosmtplib.send(welcome(email, name), hostname=SMTP_HOST, port=SMTP_PORT)


class WorkerSettings:
    functions = [send_welcome_email]  # noqa: RUF012 - as ARQ's documentation writes it
    redis_settings = REDIS
