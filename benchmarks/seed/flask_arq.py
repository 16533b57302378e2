"""A seed-style Flask app that hands the welcome email to ARQ, through an event loop running in
a thread of its own (ARQ's client is asyncio only).

    gunicorn flask_arq:app
"""

import asyncio
import threading
from typing import Any

from arq import create_pool
from arq_tasks import REDIS
from flask import Flask, request
from pydantic import BaseModel, EmailStr

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
redis = asyncio.run_coroutine_threadsafe(create_pool(REDIS), loop).result()

app = Flask(__name__)


class Signup(BaseModel):
    email: EmailStr
    name: str


@app.post("/signups")
def signup() -> tuple[dict[str, Any], int]:
    data = Signup.model_validate(request.get_json())
    enqueued = redis.enqueue_job("send_welcome_email", data.email, data.name)
    job = asyncio.run_coroutine_threadsafe(enqueued, loop).result()
    assert job is not None
    return {"job_id": job.job_id}, 202
